/* A pooled / perRequest app for the e2e tests: reads the request document from stdin and
 * answers it back as the JSON body, with the app name and `$GREETING` in headers. A request
 * whose body is "fail" exits with code 2 instead. */
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
    const char *greeting = getenv("GREETING");
    printf("{\"status\":201,\"headers\":{\"x-app\":\"%s\",\"x-greeting\":\"%s\"},\"body\":%s}",
           name ? name : "?", greeting ? greeting : "", in);
    return 0;
}
