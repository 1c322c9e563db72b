#ifndef COUROTLS_H
#define COUROTLS_H
#include <stddef.h>
#include <stdint.h>

/// TLS 1.3 with an external pre-shared key (RFC 8446 §2.2), through the system's OpenSSL: every TCP connection of
/// a ring with a cluster secret. Both ends derive the same key from the secret, so the handshake itself proves
/// each side knows it (the client's binder, the server's Finished); the key exchange is still (EC)DHE (psk_dhe_ke),
/// so a secret that leaks later does not decrypt recorded traffic. No certificates, no tickets, one cipher suite
/// (TLS_AES_128_GCM_SHA256: AES-NI here).
struct ouro_tls_context;
struct ouro_tls;

/// A client (`server` 0) or server context keyed with `key` (16 to 64 bytes); NULL if OpenSSL refused.
struct ouro_tls_context *ouro_tls_context_new(int server, const uint8_t *key, size_t key_length);

/// Runs the handshake on connected socket `fd` (blocking, within the socket's timeouts). NULL on failure, with a
/// reason in `error` (`error_length` bytes, NUL-terminated) and errno (EAGAIN: timed out).
struct ouro_tls *ouro_tls_start(struct ouro_tls_context *context, int fd, char *error, size_t error_length);

/// Up to `length` bytes of plaintext: > 0 bytes, 0 at the end of the stream, -1 with errno (EAGAIN: timed out,
/// EPROTO: a TLS failure, e.g. a record that does not authenticate).
long ouro_tls_read(struct ouro_tls *tls, void *buffer, size_t length);

/// Sends all `length` bytes: `length`, or -1 with errno as for reads.
long ouro_tls_write(struct ouro_tls *tls, const void *buffer, size_t length);

/// Ends our direction of the stream (close_notify); the peer's direction stays readable.
void ouro_tls_close_write(struct ouro_tls *tls);

/// Frees the connection's TLS state (the socket is not closed).
void ouro_tls_free(struct ouro_tls *tls);

/// The last OpenSSL error of this thread as text ("" if none), for logs and error messages.
void ouro_tls_last_error(char *error, size_t error_length);

#endif
