/*
 * evmdk.h: the C API of erofs-vmdk (libevmdk.so.0, pkg-config module "evmdk").
 *
 * What a guest agent or a VM runtime shim calls, from C or through any FFI (Rust, Go):
 * guest mount / teardown / status, compose, hook and hook cleanup, verify. Every call takes
 * one JSON request document and gives back one JSON result document: the same document the
 * `erofs-vmdk` command prints for the same operation with --json (docs/api.md lists both).
 * Request keys are the command's long option names (`--state-dir` -> "state_dir"); a key
 * the call does not know is refused, so a typo is never silently ignored.
 *
 * Every call:
 *   int evmdk_<op>(const char *request_json, char **result_json, char **error_message);
 * returns EVMDK_OK (0) or one of the codes below (docs/api.md). On return *result_json is the
 * result document or NULL, and *error_message is NULL on EVMDK_OK, else a one-line message naming
 * the input at fault (file, layer, storage, option). Free both with evmdk_free(). Either
 * output pointer may be NULL when the caller does not want it. No C++ exception ever leaves
 * the library, and the API keeps no state from one call to the next.
 */
#ifndef EVMDK_EVMDK_H
#define EVMDK_EVMDK_H

#ifdef __cplusplus
extern "C" {
#endif

#define EVMDK_API_VERSION 1

#if defined(__GNUC__)
#define EVMDK_EXPORT __attribute__((visibility("default")))
#else
#define EVMDK_EXPORT
#endif

enum evmdk_status {
  EVMDK_OK = 0,
  /* The request cannot be used: not JSON, a missing, mistyped or unknown key, an invalid
     storage object, mode, order or policy name. Nothing was done. */
  EVMDK_ERR_INVALID = 1,
  /* The operation failed (a layer that is not EROFS, a disk that is not there, an invalid
     container id, ...). Calls that change state roll back: a failed mount leaves nothing
     mounted, a failed compose or hook leaves no new file. */
  EVMDK_ERR_FAILED = 2,
  /* A system call failed; the message ends with strerror(errno). Rolled back as above. */
  EVMDK_ERR_SYSTEM = 3,
  /* The call ran to the end but found problems, listed in *result_json: teardown could not
     clean everything ("problems"), verify found a bad layer ("problems"), hook cleanup left
     something ("left"). The message summarises them. */
  EVMDK_ERR_INCOMPLETE = 4,
  /* Out of memory. */
  EVMDK_ERR_NOMEM = 5,
  /* A bug in erofs-vmdk; please report the message. */
  EVMDK_ERR_INTERNAL = 6
};

/* "0.1.0": the library's version (not the API version). */
EVMDK_EXPORT const char* evmdk_version(void);

/* EVMDK_API_VERSION of the library actually loaded. */
EVMDK_EXPORT int evmdk_api_version(void);

/* Frees a string returned by any call (result or message). NULL is allowed. */
EVMDK_EXPORT void evmdk_free(char* string);

/* The name of a status code ("EVMDK_ERR_INVALID"); a static string, never freed. */
EVMDK_EXPORT const char* evmdk_status_name(int status);

/* --- guest (in the VM) -------------------------------------------------------------- */

/* `erofs-vmdk guest mount`. Request:
 *   {"storages": [Storage...] (the storage.json document), "id": "CID",
 *    "rootfs": "/run/c/CID/rootfs", "base": "/run/erofs-vmdk", "timeout_ms": 10000,
 *    "parallel": 4}
 * "storages", "id" and "rootfs" are required. Mounts everything or nothing. */
EVMDK_EXPORT int evmdk_guest_mount(const char* request_json, char** result_json,
                                   char** error_message);

/* `erofs-vmdk guest teardown`. Request:
 *   {"id": "CID", "rootfs": "...", "base": "...", "cgroups": ["/sys/fs/cgroup/CID"],
 *    "kill_timeout_ms": 5000}
 * Only "id" is required. Idempotent; EVMDK_ERR_INCOMPLETE when something could not be
 * cleaned (the result's "problems" say what). */
EVMDK_EXPORT int evmdk_guest_teardown(const char* request_json, char** result_json,
                                      char** error_message);

/* `erofs-vmdk guest status`. Request: {"id": "CID", "base": "..."}. */
EVMDK_EXPORT int evmdk_guest_status(const char* request_json, char** result_json,
                                    char** error_message);

/* --- host ----------------------------------------------------------------------------- */

/* `erofs-vmdk compose`; the result is layout.json. Request:
 *   {"layers": ["top.erofs", ..., "base.erofs"], "output": "DIR", "mode": "auto",
 *    "order": "top-first", "fdset": false, "first_fdset": 1, "serial": "",
 *    "verity": "auto"}
 * "layers" and "output" are required. */
EVMDK_EXPORT int evmdk_compose(const char* request_json, char** result_json, char** error_message);

/* `erofs-vmdk hook`; the result is hook.json. Request:
 *   {"id": "CID", "state_dir": "DIR", "mounts": [containerd mount list], "verity": "auto"} */
EVMDK_EXPORT int evmdk_hook(const char* request_json, char** result_json, char** error_message);

/* `erofs-vmdk hook cleanup`. Request: {"id": "CID", "state_dir": "DIR"}.
 * EVMDK_ERR_INCOMPLETE when something could not be removed (the result's "left"). */
EVMDK_EXPORT int evmdk_hook_cleanup(const char* request_json, char** result_json,
                                    char** error_message);

/* `erofs-vmdk verify`. Request:
 *   {"target": "DIR or disk.vmdk", "digest": false, "expect": "FILE", "verity": false,
 *    "direct": false, "threads": 0, "chunk_size": 4194304, "queue_depth": 8}
 * Only "target" is required. EVMDK_ERR_INCOMPLETE when a check failed (the report's
 * "problems"); the report is returned either way. */
EVMDK_EXPORT int evmdk_verify(const char* request_json, char** result_json, char** error_message);

#ifdef __cplusplus
}
#endif

#endif /* EVMDK_EVMDK_H */
