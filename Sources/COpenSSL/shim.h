// The system's OpenSSL (Debian's libssl-dev): SHA-256 for content hashes (SHA-NI where the CPU has it).
#include <openssl/evp.h>
