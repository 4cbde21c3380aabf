/*
 * Seed OpenSSL from prngd and read bytes straight from it, with OpenSSL's
 * own EGD client (RAND_egd(3)).
 *
 *   cc -o egd_rand egd_rand.c -lcrypto
 *   ./egd_rand /var/run/egd-pool
 *
 * Needs an OpenSSL built with `enable-egd` (./Configure enable-egd ...).
 * Distribution builds are usually `no-egd`: their <openssl/configuration.h>
 * defines OPENSSL_NO_EGD and RAND_egd() does not exist; this file then stops
 * at the #error below.
 */
#include <stdio.h>
#include <openssl/opensslconf.h>
#include <openssl/rand.h>

#ifdef OPENSSL_NO_EGD
#error "this OpenSSL was built without EGD support (OPENSSL_NO_EGD); rebuild it with enable-egd"
#endif

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "/var/run/egd-pool";
    unsigned char buf[32];
    int i, n;

    /* 01 20 on a new connection: the 32 bytes come back to us, not into OpenSSL's pool. */
    n = RAND_query_egd_bytes(path, buf, (int)sizeof(buf));
    if (n != (int)sizeof(buf)) {
        fprintf(stderr, "RAND_query_egd_bytes(%s): %d\n", path, n);
        return 1;
    }
    for (i = 0; i < n; i++)
        printf("%02x", buf[i]);
    printf("\n");

    /* 01 ff: 255 bytes added to OpenSSL's pool with RAND_add(). */
    n = RAND_egd(path);
    printf("RAND_egd: %d bytes, RAND_status: %d\n", n, RAND_status());
    return n > 0 ? 0 : 1;
}
