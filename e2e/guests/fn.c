/* A pooled / perRequest app for the e2e tests: reads the request document from stdin and
 * answers it back as the JSON body, with the app name in a header. A request whose body is
 * "fail" exits with code 2 instead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char in[1 << 20];

int main(void) {
    size_t n = fread(in, 1, sizeof in - 1, stdin);
    in[n] = 0;
    if (strstr(in, "\"body\":\"fail\"")) {
        fprintf(stderr, "failing on request\n");
        return 2;
    }
    const char *name = getenv("FISO_APP_NAME");
    printf("{\"status\":201,\"headers\":{\"x-app\":\"%s\"},\"body\":%s}", name ? name : "?", in);
    return 0;
}
