#include "COuroTLS.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

struct ouro_tls_context {
    SSL_CTX *ctx;
    int server;
    size_t key_length;
    uint8_t key[64];
};

struct ouro_tls {
    SSL *ssl;
};

/// The PSK identity both sides name; the key behind it is what matters.
static const unsigned char psk_identity[] = "ouro ring v1";
static const unsigned char aes_128_gcm_sha256[] = {0x13, 0x01};

static int context_index = -1;

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
    if (context_index < 0) {
        // Racing first calls would only waste an index: every context stores itself under the one it read.
        int index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        if (index < 0) return NULL;
        context_index = index;
    }
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
    SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
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
    tls->ssl = SSL_new(context->ctx);
    if (tls->ssl == NULL || !SSL_set_fd(tls->ssl, fd)) {
        ouro_tls_last_error(error, error_length);
        ouro_tls_free(tls);
        errno = ENOMEM;
        return NULL;
    }
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

long ouro_tls_read(struct ouro_tls *tls, void *buffer, size_t length) {
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

long ouro_tls_write(struct ouro_tls *tls, const void *buffer, size_t length) {
    if (length == 0) return 0;
    for (;;) {
        size_t count = 0;
        ERR_clear_error();
        errno = 0;
        // Blocking and without partial writes: one call sends all of it, or fails (a retry repeats the same call).
        int result = SSL_write_ex(tls->ssl, buffer, length, &count);
        int saved = errno, retry;
        if (result == 1) return (long)count;
        int error = failure(tls->ssl, result, saved, &retry);
        if (retry) continue;
        errno = error == 0 ? EPIPE : error;
        return -1;
    }
}

void ouro_tls_close_write(struct ouro_tls *tls) {
    ERR_clear_error();
    (void)SSL_shutdown(tls->ssl);
    ERR_clear_error();
}

void ouro_tls_free(struct ouro_tls *tls) {
    if (tls == NULL) return;
    if (tls->ssl != NULL) SSL_free(tls->ssl);
    free(tls);
}
