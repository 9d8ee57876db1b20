/*
 * The C API from C: refuses bad requests with a code and a message naming the problem,
 * composes and verifies a GPT disk of two real EROFS layers (mkfs.erofs), then mounts the
 * layers from read-only loop devices as an overlay rootfs through evmdk_guest_mount, reads
 * the merged view, and tears it down through evmdk_guest_teardown, leaving nothing mounted.
 * Runs in a private mount namespace.
 *
 * Built twice: in the tree (ctest, label root) and by scripts/check-package.sh against the
 * installed package with `pkg-config --cflags --libs evmdk`. Needs only the header, the
 * library, and mkfs.erofs/losetup on PATH. Exit 77 = skipped (no root or no loop devices);
 * with CI=true a missing prerequisite fails instead.
 */
#define _GNU_SOURCE
#include <evmdk/evmdk.h>

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);      \
      fprintf(stderr, __VA_ARGS__);                                        \
      fputc('\n', stderr);                                                 \
      failures++;                                                          \
    }                                                                      \
  } while (0)

static const char *or_null(const char *text) { return text ? text : "(null)"; }

static int contains(const char *text, const char *needle) {
  return text != NULL && strstr(text, needle) != NULL;
}

/* A request the API must refuse: code `expected`, no result, a message holding every needle. */
static void expect_refused(int (*call)(const char *, char **, char **), const char *request,
                           int expected, const char *needle1, const char *needle2) {
  char *result = NULL;
  char *message = NULL;
  int status = call(request, &result, &message);
  CHECK(status == expected, "request %s: got %s, want %s (%s)", request,
        evmdk_status_name(status), evmdk_status_name(expected), or_null(message));
  CHECK(result == NULL, "request %s: a refused call returned a result: %s", request, result);
  CHECK(contains(message, needle1), "request %s: message does not name '%s': %s", request,
        needle1, or_null(message));
  if (needle2 != NULL) {
    CHECK(contains(message, needle2), "request %s: message does not name '%s': %s", request,
          needle2, or_null(message));
  }
  evmdk_free(result);
  evmdk_free(message);
}

static void check_refusals(void) {
  /* A storage whose source is not a string: the message names the storage and the field. */
  expect_refused(evmdk_guest_mount,
                 "{\"storages\": [{\"driver\": \"blk\", \"source\": 7, \"fstype\": \"erofs\"}],"
                 " \"id\": \"c1\", \"rootfs\": \"/nonexistent/rootfs\"}",
                 EVMDK_ERR_INVALID, "storage #0", "'source'");
  expect_refused(evmdk_guest_mount, "{\"storages\": {}, \"id\": \"c1\", \"rootfs\": \"/r\"}",
                 EVMDK_ERR_INVALID, "storages", "JSON array");
  expect_refused(evmdk_guest_mount, "[1, 2", EVMDK_ERR_INVALID, "not valid JSON", NULL);
  expect_refused(evmdk_guest_mount, "{\"storages\": [], \"id\": \"c1\"}", EVMDK_ERR_INVALID,
                 "\"rootfs\"", "required");
  /* A typo is refused, not ignored. */
  expect_refused(evmdk_guest_teardown, "{\"id\": \"c1\", \"kill_timeout\": 5}",
                 EVMDK_ERR_INVALID, "kill_timeout", "unknown");
  expect_refused(evmdk_guest_teardown, "{\"id\": \"c1\", \"cgroups\": \"/sys/fs/cgroup/x\"}",
                 EVMDK_ERR_INVALID, "cgroups", "array of strings");
  expect_refused(evmdk_compose, "{\"layers\": [\"/nonexistent/layer.erofs\"], \"output\": "
                 "\"/nonexistent/out\", \"mode\": \"zip\"}",
                 EVMDK_ERR_INVALID, "mode", "zip");
  /* A layer that is not there: open(2) fails, so the code is EVMDK_ERR_SYSTEM and the message
     names the file and ends with strerror(ENOENT). */
  expect_refused(evmdk_compose, "{\"layers\": [\"/nonexistent/layer.erofs\"], \"output\": "
                 "\"/nonexistent/out\", \"verity\": \"off\"}",
                 EVMDK_ERR_SYSTEM, "/nonexistent/layer.erofs", "No such file or directory");
  /* A layer that is there but is not EROFS: the operation fails (not a system error). */
  expect_refused(evmdk_compose, "{\"layers\": [\"/etc/passwd\"], \"output\": "
                 "\"/nonexistent/out\", \"verity\": \"off\"}",
                 EVMDK_ERR_FAILED, "/etc/passwd", NULL);
  /* Both output pointers may be NULL. */
  CHECK(evmdk_guest_status("{}", NULL, NULL) == EVMDK_ERR_INVALID, "status without id");
  CHECK(evmdk_guest_status(NULL, NULL, NULL) == EVMDK_ERR_INVALID, "NULL request");
}

/* Runs a shell command; its output (first line) into `out` when given. */
static int run(const char *command, char *out, size_t size) {
  FILE *pipe = popen(command, "r");
  if (pipe == NULL) return -1;
  if (out != NULL && size > 0) {
    out[0] = '\0';
    if (fgets(out, (int)size, pipe) != NULL) out[strcspn(out, "\n")] = '\0';
  }
  char sink[256];
  while (fgets(sink, sizeof sink, pipe) != NULL) {
  }
  return pclose(pipe);
}

static int read_text(const char *path, char *out, size_t size) {
  FILE *file = fopen(path, "r");
  if (file == NULL) return -1;
  size_t n = fread(out, 1, size - 1, file);
  out[n] = '\0';
  fclose(file);
  return 0;
}

static int write_text(const char *path, const char *text) {
  FILE *file = fopen(path, "w");
  if (file == NULL) return -1;
  fputs(text, file);
  return fclose(file);
}

/* How many mounts of this namespace lie at or under `dir`. */
static int mounts_under(const char *dir) {
  FILE *info = fopen("/proc/self/mountinfo", "r");
  if (info == NULL) return -1;
  char line[4096];
  size_t length = strlen(dir);
  int count = 0;
  while (fgets(line, sizeof line, info) != NULL) {
    char point[4096];
    /* id parent major:minor root mount-point ... */
    if (sscanf(line, "%*s %*s %*s %*s %4095s", point) == 1 && strncmp(point, dir, length) == 0 &&
        (point[length] == '\0' || point[length] == '/')) {
      count++;
    }
  }
  fclose(info);
  return count;
}

static const char *missing_prerequisite(void) {
  if (geteuid() != 0) return "needs root (loop devices and mounts)";
  if (access("/dev/loop-control", R_OK | W_OK) != 0) return "needs /dev/loop-control";
  if (run("command -v mkfs.erofs && command -v losetup", NULL, 0) != 0) {
    return "needs mkfs.erofs and losetup";
  }
  return NULL;
}

struct layer {
  char tree[512];
  char image[512];
  char device[128];
};

static int make_layer(const char *temp, const char *name, const char *uuid, struct layer *layer,
                      const char *motd, const char *extra_file) {
  char path[1024], command[2048];
  snprintf(layer->tree, sizeof layer->tree, "%s/%s", temp, name);
  snprintf(layer->image, sizeof layer->image, "%s/%s.erofs", temp, name);
  snprintf(path, sizeof path, "%s/etc", layer->tree);
  if (mkdir(layer->tree, 0755) != 0 || mkdir(path, 0755) != 0) return -1;
  snprintf(path, sizeof path, "%s/etc/motd", layer->tree);
  if (write_text(path, motd) != 0) return -1;
  snprintf(path, sizeof path, "%s/%s", layer->tree, extra_file);
  if (write_text(path, name) != 0) return -1;
  snprintf(command, sizeof command, "mkfs.erofs --quiet -T 0 -U %s '%s' '%s' >/dev/null 2>&1",
           uuid, layer->image, layer->tree);
  if (run(command, NULL, 0) != 0) return -1;
  snprintf(command, sizeof command, "losetup --show -f --read-only '%s'", layer->image);
  if (run(command, layer->device, sizeof layer->device) != 0 || layer->device[0] != '/') return -1;
  return 0;
}

static void detach(struct layer *layer) {
  char command[256];
  if (layer->device[0] == '\0') return;
  snprintf(command, sizeof command, "losetup -d '%s'", layer->device);
  run(command, NULL, 0);
}

#define TOP_UUID "00000001-1111-4222-8333-000000000001"
#define BASE_UUID "00000001-1111-4222-8333-000000000002"

/* Storage objects as compose emits them for one raw disk per layer, no upper storage (the
   driver puts a memory-backed upper under the overlay). */
static void storages_json(char *out, size_t size, const struct layer *top,
                          const struct layer *base, const char *top_uuid) {
  snprintf(out, size,
           "[{\"driver\": \"blk\", \"source\": \"%s\", \"fstype\": \"erofs\", \"mount_point\": "
           "\"lower-0\", \"options\": [\"ro\", \"X-kata.multi-layer=true\", "
           "\"X-kata.overlay-lower\", \"X-erofs-vmdk.layer-index=0\", "
           "\"X-erofs-vmdk.erofs-uuid=%s\"]},"
           " {\"driver\": \"blk\", \"source\": \"%s\", \"fstype\": \"erofs\", \"mount_point\": "
           "\"lower-1\", \"options\": [\"ro\", \"X-kata.multi-layer=true\", "
           "\"X-kata.overlay-lower\", \"X-erofs-vmdk.layer-index=1\", "
           "\"X-erofs-vmdk.erofs-uuid=" BASE_UUID "\"]}]",
           top->device, top_uuid, base->device);
}

static void check_mount_and_teardown(const char *temp) {
  struct layer top = {{0}, {0}, {0}}, base = {{0}, {0}, {0}};
  char rootfs[512], base_dir[512], request[8192], storages[4096], path[1024], text[256];
  snprintf(rootfs, sizeof rootfs, "%s/rootfs", temp);
  snprintf(base_dir, sizeof base_dir, "%s/base", temp);
  if (make_layer(temp, "top", TOP_UUID, &top, "top motd\n", "only-top") != 0 ||
      make_layer(temp, "base", BASE_UUID, &base, "base motd\n", "only-base") != 0) {
    CHECK(0, "cannot build the test layers in %s", temp);
    detach(&top);
    detach(&base);
    return;
  }

  char *result = NULL;
  char *message = NULL;

  /* Host side on the same layers: compose a GPT disk, then verify it reads back right. */
  snprintf(request, sizeof request,
           "{\"layers\": [\"%s\", \"%s\"], \"output\": \"%s/out\", \"mode\": \"gpt\","
           " \"verity\": \"off\"}",
           top.image, base.image, temp);
  int status = evmdk_compose(request, &result, &message);
  CHECK(status == EVMDK_OK, "compose: %s: %s", evmdk_status_name(status), or_null(message));
  CHECK(contains(result, "\"mode\": \"gpt\"") && contains(result, top.image),
        "compose result is layout.json: %s", or_null(result));
  evmdk_free(result);
  evmdk_free(message);
  result = message = NULL;
  snprintf(path, sizeof path, "%s/out/disk.vmdk", temp);
  CHECK(access(path, F_OK) == 0, "compose wrote no %s", path);
  snprintf(request, sizeof request, "{\"target\": \"%s/out\", \"digest\": true}", temp);
  status = evmdk_verify(request, &result, &message);
  CHECK(status == EVMDK_OK, "verify: %s: %s", evmdk_status_name(status), or_null(message));
  CHECK(contains(result, "\"problems\": []") && contains(result, "\"sha256\""),
        "verify report: %s", or_null(result));
  evmdk_free(result);
  evmdk_free(message);
  result = message = NULL;

  /* A layer that is not the one the storage names: refused, rolled back, nothing mounted. */
  storages_json(storages, sizeof storages, &top, &base, "00000001-1111-4222-8333-0000000000ff");
  snprintf(request, sizeof request,
           "{\"storages\": %s, \"id\": \"bad\", \"rootfs\": \"%s\", \"base\": \"%s\"}", storages,
           rootfs, base_dir);
  status = evmdk_guest_mount(request, &result, &message);
  CHECK(status == EVMDK_ERR_FAILED, "wrong EROFS UUID: got %s (%s)", evmdk_status_name(status),
        or_null(message));
  CHECK(contains(message, "0000000000ff"), "the message names the expected UUID: %s",
        or_null(message));
  CHECK(result == NULL, "a failed mount returned a result");
  CHECK(mounts_under(temp) == 0, "a refused mount left %d mount(s) under %s", mounts_under(temp),
        temp);
  evmdk_free(result);
  evmdk_free(message);
  result = message = NULL;

  storages_json(storages, sizeof storages, &top, &base, TOP_UUID);
  snprintf(request, sizeof request,
           "{\"storages\": %s, \"id\": \"c1\", \"rootfs\": \"%s\", \"base\": \"%s\","
           " \"timeout_ms\": 5000, \"parallel\": 2}",
           storages, rootfs, base_dir);
  status = evmdk_guest_mount(request, &result, &message);
  CHECK(status == EVMDK_OK, "mount: %s: %s", evmdk_status_name(status), or_null(message));
  CHECK(message == NULL, "a successful call set a message: %s", or_null(message));
  CHECK(contains(result, "\"rootfs_kind\": \"overlay\""), "mount result: %s", or_null(result));
  CHECK(contains(result, "/c1/multi-layer/lower-1"), "mount result lists the lowers: %s",
        or_null(result));
  evmdk_free(result);
  evmdk_free(message);
  result = message = NULL;

  if (status == EVMDK_OK) {
    /* The merged view: the top layer wins, each layer's own files show through. */
    snprintf(path, sizeof path, "%s/etc/motd", rootfs);
    CHECK(read_text(path, text, sizeof text) == 0 && strcmp(text, "top motd\n") == 0,
          "%s: '%s'", path, text);
    snprintf(path, sizeof path, "%s/only-base", rootfs);
    CHECK(read_text(path, text, sizeof text) == 0 && strcmp(text, "base") == 0, "%s: '%s'", path,
          text);
    snprintf(path, sizeof path, "%s/only-top", rootfs);
    CHECK(read_text(path, text, sizeof text) == 0 && strcmp(text, "top") == 0, "%s: '%s'", path,
          text);
    /* Writable: the memory-backed upper takes the write, the layers stay untouched. */
    snprintf(path, sizeof path, "%s/written", rootfs);
    CHECK(write_text(path, "hello\n") == 0, "cannot write %s: %s", path, strerror(errno));
    CHECK(mounts_under(rootfs) == 1, "the rootfs is one mount, found %d", mounts_under(rootfs));

    snprintf(request, sizeof request, "{\"id\": \"c1\", \"base\": \"%s\"}", base_dir);
    status = evmdk_guest_status(request, &result, &message);
    CHECK(status == EVMDK_OK, "status: %s: %s", evmdk_status_name(status), or_null(message));
    CHECK(contains(result, rootfs), "status names the rootfs: %s", or_null(result));
    evmdk_free(result);
    evmdk_free(message);
    result = message = NULL;
  }

  snprintf(request, sizeof request, "{\"id\": \"c1\", \"base\": \"%s\"}", base_dir);
  status = evmdk_guest_teardown(request, &result, &message);
  CHECK(status == EVMDK_OK, "teardown: %s: %s", evmdk_status_name(status), or_null(message));
  CHECK(contains(result, "\"problems\": []"), "teardown report: %s", or_null(result));
  evmdk_free(result);
  evmdk_free(message);
  result = message = NULL;
  CHECK(mounts_under(temp) == 0, "teardown left %d mount(s) under %s", mounts_under(temp), temp);
  snprintf(path, sizeof path, "%s/c1", base_dir);
  CHECK(access(path, F_OK) != 0, "teardown left %s", path);

  /* Idempotent: a second teardown finds nothing and succeeds. */
  status = evmdk_guest_teardown(request, &result, &message);
  CHECK(status == EVMDK_OK, "second teardown: %s: %s", evmdk_status_name(status),
        or_null(message));
  evmdk_free(result);
  evmdk_free(message);

  detach(&top);
  detach(&base);
}

int main(void) {
  CHECK(evmdk_api_version() == EVMDK_API_VERSION, "header and library disagree: %d",
        evmdk_api_version());
  CHECK(evmdk_version() != NULL && evmdk_version()[0] != '\0', "no version");
  check_refusals();

  const char *missing = missing_prerequisite();
  if (missing != NULL) {
    const char *ci = getenv("CI");
    if (ci != NULL && strcmp(ci, "true") == 0) {
      fprintf(stderr, "FAIL: CI=true but prerequisite missing: %s\n", missing);
      return 1;
    }
    printf("SKIP: prerequisite missing: %s (%d refusal failure(s))\n", missing, failures);
    return failures ? 1 : 77;
  }

  /* A private mount namespace: whatever happens, no mount leaks into the host's. */
  if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
    fprintf(stderr, "FAIL: cannot enter a private mount namespace: %s\n", strerror(errno));
    return 1;
  }
  char temp[] = "/tmp/evmdk-capi-XXXXXX";
  if (mkdtemp(temp) == NULL) {
    fprintf(stderr, "FAIL: mkdtemp: %s\n", strerror(errno));
    return 1;
  }
  check_mount_and_teardown(temp);
  if (mounts_under(temp) == 0) { /* never remove through a mount left behind */
    char command[256];
    snprintf(command, sizeof command, "rm -rf '%s'", temp);
    run(command, NULL, 0);
  }

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("PASS: C API refusals, compose, verify, guest mount of 2 layers, status, teardown\n");
  return 0;
}
