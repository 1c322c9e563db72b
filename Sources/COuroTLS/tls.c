#include "COuroTLS.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

struct ouro_tls_context {
    SSL_CTX *ctx;
    int server;
    size_t key_length;
    uint8_t key[64];
};

/// One connection: its SSL, and the socket under it through a BIO of our own (`set_up`), which gathers the
/// records one SSL_write makes into large sends (OpenSSL's socket BIO sends each 16 KiB record by itself: a system
/// call and a loopback wake-up each) and can read without waiting (`dont_wait`, to drain what has arrived).
struct ouro_tls {
    SSL *ssl;
    int fd;
    int dont_wait;
    int gather;  // set while a large write runs: its records are sent together
    int at_eof;
    size_t buffered;
    uint8_t *buffer;  // OUTGOING_BYTES, made on the first write
};

enum { OUTGOING_BYTES = 256 * 1024 };

/// Sends all `length` bytes (MSG_NOSIGNAL: a closed peer is EPIPE, not a signal); 0, or -1 with errno (EAGAIN:
/// the socket's send timeout).
static int send_all(int fd, const void *data, size_t length) {
    size_t sent = 0;
    while (sent < length) {
        ssize_t count = send(fd, (const uint8_t *)data + sent, length - sent, MSG_NOSIGNAL);
        if (count > 0) { sent += (size_t)count; continue; }
        if (count < 0 && errno == EINTR) continue;
        if (count == 0) errno = EPIPE;
        return -1;
    }
    return 0;
}

/// Sends what the BIO gathered; 0, or -1 with errno.
static int flush_outgoing(struct ouro_tls *tls) {
    if (tls->buffered > 0 && send_all(tls->fd, tls->buffer, tls->buffered) != 0) return -1;
    tls->buffered = 0;
    return 0;
}

static int socket_write(BIO *bio, const char *data, size_t length, size_t *written) {
    struct ouro_tls *tls = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    *written = 0;
    // Handshakes and small answers go straight out (and a control connection never holds a send buffer).
    if (tls->gather && tls->buffer == NULL && (tls->buffer = malloc(OUTGOING_BYTES)) == NULL) tls->gather = 0;
    int direct = !tls->gather || length >= OUTGOING_BYTES;
    // In order: what is gathered goes before these bytes.
    if ((direct || tls->buffered + length > OUTGOING_BYTES) && tls->buffered > 0 && flush_outgoing(tls) != 0) return 0;
    if (direct) {
        if (send_all(tls->fd, data, length) != 0) return 0;
    } else {
        memcpy(tls->buffer + tls->buffered, data, length);
        tls->buffered += length;
    }
    *written = length;
    return 1;
}

static int socket_read(BIO *bio, char *data, size_t length, size_t *read_bytes) {
    struct ouro_tls *tls = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    *read_bytes = 0;
    ssize_t count = recv(tls->fd, data, length, tls->dont_wait ? MSG_DONTWAIT : 0);
    if (count > 0) { *read_bytes = (size_t)count; return 1; }
    if (count == 0) { tls->at_eof = 1; return 0; }
    // A timeout (EAGAIN, from SO_RCVTIMEO or MSG_DONTWAIT) or a signal: try again later; anything else is an error.
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) BIO_set_retry_read(bio);
    return 0;
}

static long socket_control(BIO *bio, int command, long number, void *pointer) {
    (void)number; (void)pointer;
    struct ouro_tls *tls = BIO_get_data(bio);
    switch (command) {
    case BIO_CTRL_FLUSH: return flush_outgoing(tls) == 0 ? 1 : 0;
    case BIO_CTRL_EOF: return tls->at_eof;
    case BIO_CTRL_WPENDING: return (long)tls->buffered;
    case BIO_CTRL_PENDING: return 0;
    default: return 0;
    }
}

/// The PSK identity both sides name; the key behind it is what matters.
static const unsigned char psk_identity[] = "ouro ring v1";
static const unsigned char aes_128_gcm_sha256[] = {0x13, 0x01};

static int context_index = -1;
static BIO_METHOD *method;
static pthread_once_t set_up_once = PTHREAD_ONCE_INIT;

/// The SSL_CTX slot for our context, and our BIO's method: made once per process.
static void set_up(void) {
    context_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    BIO_METHOD *made = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ouro socket");
    if (made == NULL) return;
    BIO_meth_set_write_ex(made, socket_write);
    BIO_meth_set_read_ex(made, socket_read);
    BIO_meth_set_ctrl(made, socket_control);
    method = made;
}

static struct ouro_tls_context *context_of(SSL *ssl) {
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), context_index);
}

static SSL_SESSION *psk_session(SSL *ssl) {
    struct ouro_tls_context *context = context_of(ssl);
    const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, aes_128_gcm_sha256);
    if (context == NULL || cipher == NULL) return NULL;
    SSL_SESSION *session = SSL_SESSION_new();
    if (session == NULL) return NULL;
    if (!SSL_SESSION_set1_master_key(session, context->key, context->key_length)
        || !SSL_SESSION_set_cipher(session, cipher)
        || !SSL_SESSION_set_protocol_version(session, TLS1_3_VERSION)) {
        SSL_SESSION_free(session);
        return NULL;
    }
    return session;
}

/// Client: offers the ring's PSK (OpenSSL owns the session it is handed).
static int use_psk(SSL *ssl, const EVP_MD *digest, const unsigned char **identity, size_t *identity_length,
                   SSL_SESSION **session) {
    *session = NULL;
    if (digest != NULL && digest != EVP_sha256()) return 1;  // after a HelloRetryRequest for another hash: none
    *session = psk_session(ssl);
    if (*session == NULL) return 0;
    *identity = psk_identity;
    *identity_length = sizeof psk_identity - 1;
    return 1;
}

/// Server: knows one identity; anything else finds no key, and the handshake fails (there is no certificate).
static int find_psk(SSL *ssl, const unsigned char *identity, size_t identity_length, SSL_SESSION **session) {
    *session = NULL;
    if (identity_length != sizeof psk_identity - 1 || memcmp(identity, psk_identity, identity_length) != 0) return 1;
    *session = psk_session(ssl);
    return *session != NULL;
}

struct ouro_tls_context *ouro_tls_context_new(int server, const uint8_t *key, size_t key_length) {
    if (key_length < 16 || key_length > 64) return NULL;
    pthread_once(&set_up_once, set_up);
    if (context_index < 0 || method == NULL) return NULL;
    struct ouro_tls_context *context = calloc(1, sizeof *context);
    if (context == NULL) return NULL;
    context->server = server;
    context->key_length = key_length;
    memcpy(context->key, key, key_length);
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL) { free(context); return NULL; }
    context->ctx = ctx;
    SSL_CTX_set_ex_data(ctx, context_index, context);
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
    // Our protocol frames its own ends (lengths, replies): a peer that closes without close_notify is an end of
    // stream, as on plain TCP, not an error.
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);  // nothing after the handshake but application data
    // Read whole bursts of records per system call, not a 5-byte header and then its record.
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, 256 * 1024);
    // An idle pooled connection gives its read buffer back.
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (server) SSL_CTX_set_psk_find_session_callback(ctx, find_psk);
    else SSL_CTX_set_psk_use_session_callback(ctx, use_psk);
    return context;
}

void ouro_tls_last_error(char *error, size_t error_length) {
    if (error_length == 0) return;
    unsigned long code = ERR_peek_last_error();
    if (code == 0) { error[0] = 0; return; }
    ERR_error_string_n(code, error, error_length);
}

struct ouro_tls *ouro_tls_start(struct ouro_tls_context *context, int fd, char *error, size_t error_length) {
    if (error_length > 0) error[0] = 0;
    struct ouro_tls *tls = calloc(1, sizeof *tls);
    if (tls == NULL) { errno = ENOMEM; return NULL; }
    ERR_clear_error();
    tls->fd = fd;
    tls->ssl = SSL_new(context->ctx);
    BIO *bio = BIO_new(method);
    if (tls->ssl == NULL || bio == NULL) {
        ouro_tls_last_error(error, error_length);
        BIO_free(bio);
        ouro_tls_free(tls);
        errno = ENOMEM;
        return NULL;
    }
    BIO_set_data(bio, tls);
    BIO_set_init(bio, 1);
    SSL_set_bio(tls->ssl, bio, bio);  // the SSL owns it now
    for (;;) {
        errno = 0;
        int result = context->server ? SSL_accept(tls->ssl) : SSL_connect(tls->ssl);
        int saved = errno;
        if (result == 1) return tls;
        int kind = SSL_get_error(tls->ssl, result);
        if ((kind == SSL_ERROR_WANT_READ || kind == SSL_ERROR_WANT_WRITE) && saved == EINTR) continue;
        ouro_tls_last_error(error, error_length);
        if (kind == SSL_ERROR_WANT_READ || kind == SSL_ERROR_WANT_WRITE) saved = EAGAIN;
        else if (kind == SSL_ERROR_ZERO_RETURN || (kind == SSL_ERROR_SYSCALL && saved == 0)) saved = ECONNRESET;
        else if (kind == SSL_ERROR_SSL) saved = EPROTO;
        ERR_clear_error();
        ouro_tls_free(tls);
        errno = saved;
        return NULL;
    }
}

/// errno for a failed SSL_read_ex/SSL_write_ex; 0: the end of the stream.
static int failure(SSL *ssl, int result, int saved, int *retry) {
    *retry = 0;
    switch (SSL_get_error(ssl, result)) {
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        if (saved == EINTR) { *retry = 1; return EINTR; }
        return EAGAIN;  // the socket's timeout
    case SSL_ERROR_SYSCALL: return saved == 0 ? 0 : saved;
    default: return EPROTO;
    }
}

/// One SSL_read_ex: > 0 bytes, 0 at the end, -1 with errno.
static long read_once(struct ouro_tls *tls, uint8_t *buffer, size_t length) {
    for (;;) {
        size_t count = 0;
        ERR_clear_error();
        errno = 0;
        int result = SSL_read_ex(tls->ssl, buffer, length, &count);
        int saved = errno, retry;
        if (result == 1) return (long)count;
        int error = failure(tls->ssl, result, saved, &retry);
        if (retry) continue;
        if (error == 0) return 0;
        errno = error;
        return -1;
    }
}

long ouro_tls_read(struct ouro_tls *tls, void *buffer, size_t length) {
    // Waits for the first record; then takes every further one that has already arrived, without waiting: one
    // SSL_read gives one record (16 KiB), and a caller that reads 1 MiB should not have to come back 64 times
    // (the relay then writes its disk and the next hop in 16 KiB steps).
    long total = read_once(tls, buffer, length);
    if (total <= 0) return total;
    tls->dont_wait = 1;
    while ((size_t)total < length) {
        long count = read_once(tls, (uint8_t *)buffer + total, length - (size_t)total);
        if (count <= 0) break;  // nothing more yet (EAGAIN), the end, or an error: the next call reports the last two
        total += count;
    }
    tls->dont_wait = 0;
    ERR_clear_error();
    return total;
}

long ouro_tls_write(struct ouro_tls *tls, const void *buffer, size_t length) {
    if (length == 0) return 0;
    for (;;) {
        size_t count = 0;
        ERR_clear_error();
        errno = 0;
        // Blocking and without partial writes: one call sends all of it, or fails (a retry repeats the same call).
        // More than a record's worth: its records are gathered into large sends.
        tls->gather = length > 16 * 1024;
        int result = SSL_write_ex(tls->ssl, buffer, length, &count);
        int saved = errno, retry;
        tls->gather = 0;
        if (result == 1) {
            // The records are gathered in the BIO: out they go, before the caller waits for an answer.
            if (flush_outgoing(tls) != 0) return -1;
            return (long)count;
        }
        int error = failure(tls->ssl, result, saved, &retry);
        if (retry) continue;
        errno = error == 0 ? EPIPE : error;
        return -1;
    }
}

void ouro_tls_close_write(struct ouro_tls *tls) {
    ERR_clear_error();
    (void)SSL_shutdown(tls->ssl);
    (void)flush_outgoing(tls);
    ERR_clear_error();
}

void ouro_tls_free(struct ouro_tls *tls) {
    if (tls == NULL) return;
    if (tls->ssl != NULL) SSL_free(tls->ssl);  // and its BIO
    free(tls->buffer);
    free(tls);
}
