/* Links the C API through find_package(erofs-vmdk); prints the version and the refusal of a
   request with an unknown key (exit 0 only when both are as documented). */
#include <evmdk/evmdk.h>

#include <stdio.h>
#include <string.h>

int main(void) {
  char *result = NULL;
  char *message = NULL;
  int status = evmdk_guest_status("{\"id\": \"c1\", \"colour\": \"red\"}", &result, &message);
  int ok = status == EVMDK_ERR_INVALID && result == NULL && message != NULL &&
           strstr(message, "colour") != NULL;
  printf("evmdk %s: %s: %s\n", evmdk_version(), evmdk_status_name(status),
         message ? message : "(no message)");
  evmdk_free(result);
  evmdk_free(message);
  return ok ? 0 : 1;
}
