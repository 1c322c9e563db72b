// The system's OpenSSL (Debian's libssl-dev): SHA-256 for content hashes (SHA-NI where the CPU has it), and
// HMAC-SHA256 for the dashboard's session token.
#include <openssl/evp.h>
#include <openssl/hmac.h>
