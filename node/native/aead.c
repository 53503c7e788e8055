/* ChaCha20-Poly1305 (RFC 8439) for the noise channel, through the OpenSSL that Node itself
 * links: one cipher context reused for every message, ciphertext written in place or straight
 * into the caller's buffer, so a message costs no allocation and no extra copy. Node's crypto
 * module makes a new cipher object per message and returns fresh buffers (then concatenated),
 * which at 64 KiB messages is a large share of the receive and send path.
 *
 *   seal(key, nonce, ad, parts, out): out = encrypt(concat(parts)) || tag; out.length must be
 *     the parts' total + 16.
 *   open(key, nonce, ad, parts, tag, dst) -> boolean: dst = decrypt(concat(parts)) when the tag
 *     checks; dst has the parts' total length, and each part is either its own place in dst
 *     (in place) or outside dst. On a bad tag dst holds unauthenticated bytes and false is
 *     returned. */
#include <node_api.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "bytes.h"

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16

/* One pair of contexts per JavaScript environment (main thread or worker). */
typedef struct { EVP_CIPHER_CTX *enc; EVP_CIPHER_CTX *dec; } Contexts;

static void free_contexts(napi_env env, void *data, void *hint) {
  Contexts *c = (Contexts *)data;
  if (c->enc != NULL) EVP_CIPHER_CTX_free(c->enc);
  if (c->dec != NULL) EVP_CIPHER_CTX_free(c->dec);
  free(c);
}

static Contexts *contexts(napi_env env) {
  Contexts *c = NULL;
  napi_get_instance_data(env, (void **)&c);
  return c;
}

static int key_nonce(napi_env env, napi_value *argv, uint8_t **key, uint8_t **nonce) {
  size_t kl, nl;
  if (!bytes_of(env, argv[0], key, &kl) || !bytes_of(env, argv[1], nonce, &nl)) return 0;
  if (kl != KEY_LEN || nl != NONCE_LEN) { napi_throw_range_error(env, "EINVAL", "key must be 32 bytes and nonce 12"); return 0; }
  return 1;
}

static int init_ctx(napi_env env, EVP_CIPHER_CTX **ctx, int enc, const uint8_t *key, const uint8_t *nonce) {
  if (*ctx == NULL) {
    *ctx = EVP_CIPHER_CTX_new();
    if (*ctx == NULL) { napi_throw_error(env, "ENOMEM", "EVP_CIPHER_CTX_new failed"); return 0; }
    if (EVP_CipherInit_ex(*ctx, EVP_chacha20_poly1305(), NULL, NULL, NULL, enc) != 1 ||
        EVP_CIPHER_CTX_ctrl(*ctx, EVP_CTRL_AEAD_SET_IVLEN, NONCE_LEN, NULL) != 1) {
      EVP_CIPHER_CTX_free(*ctx);
      *ctx = NULL;
      napi_throw_error(env, "ECRYPTO", "chacha20-poly1305 is not available");
      return 0;
    }
  }
  if (EVP_CipherInit_ex(*ctx, NULL, NULL, key, nonce, enc) != 1) { napi_throw_error(env, "ECRYPTO", "cipher init failed"); return 0; }
  return 1;
}

static int add_ad(napi_env env, EVP_CIPHER_CTX *ctx, napi_value v) {
  uint8_t *ad; size_t adl; int outl;
  if (!bytes_of(env, v, &ad, &adl)) return 0;
  if (adl > 0 && EVP_CipherUpdate(ctx, NULL, &outl, ad, (int)adl) != 1) { napi_throw_error(env, "ECRYPTO", "AAD update failed"); return 0; }
  return 1;
}

/* The Uint8Arrays of a JavaScript array, read once. */
typedef struct { const uint8_t *p; size_t len; } Part;
typedef struct { Part *at; uint32_t n; size_t total; Part local[8]; } Parts;

static void parts_free(Parts *ps) { if (ps->at != ps->local) free(ps->at); }

static int parts_of(napi_env env, napi_value arr, Parts *ps) {
  ps->at = ps->local; ps->n = 0; ps->total = 0;
  bool is_array = false;
  napi_is_array(env, arr, &is_array);
  if (!is_array) { napi_throw_type_error(env, "EINVAL", "parts must be an array of Uint8Arrays"); return 0; }
  uint32_t n;
  napi_get_array_length(env, arr, &n);
  if (n > sizeof ps->local / sizeof ps->local[0] && (ps->at = malloc(n * sizeof(Part))) == NULL) {
    ps->at = ps->local;
    napi_throw_error(env, "ENOMEM", "aead: no memory");
    return 0;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value v; uint8_t *p; size_t l;
    napi_get_element(env, arr, i, &v);
    if (!bytes_of(env, v, &p, &l)) { parts_free(ps); return 0; }
    ps->at[ps->n++] = (Part){ p, l };
    ps->total += l;
  }
  if (ps->total > INT32_MAX) { parts_free(ps); napi_throw_range_error(env, "EINVAL", "message too large"); return 0; }
  return 1;
}

/* Encrypts or decrypts the parts one after another into out; the bytes written, or -1. */
static long update_parts(EVP_CIPHER_CTX *ctx, const Parts *ps, uint8_t *out) {
  size_t off = 0;
  for (uint32_t i = 0; i < ps->n; i++) {
    int outl = 0;
    if (ps->at[i].len == 0) continue;
    if (EVP_CipherUpdate(ctx, out + off, &outl, ps->at[i].p, (int)ps->at[i].len) != 1) return -1;
    off += (size_t)outl;
  }
  return (long)off;
}

static napi_value seal(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 5) { napi_throw_type_error(env, "EINVAL", "seal(key, nonce, ad, parts, out)"); return NULL; }
  uint8_t *key, *nonce, *out;
  size_t out_len;
  Parts ps;
  if (!key_nonce(env, argv, &key, &nonce) || !bytes_of(env, argv[4], &out, &out_len) || !parts_of(env, argv[3], &ps)) return NULL;
  const char *bad = NULL;
  if (out_len != ps.total + TAG_LEN) bad = "out must be the plaintext's length + 16";
  for (uint32_t i = 0; bad == NULL && i < ps.n; i++) {
    if (ps.at[i].len > 0 && ps.at[i].p < out + out_len && out < ps.at[i].p + ps.at[i].len) bad = "out overlaps the plaintext";
  }
  if (bad != NULL) { parts_free(&ps); napi_throw_range_error(env, "EINVAL", bad); return NULL; }
  Contexts *c = contexts(env);
  if (!init_ctx(env, &c->enc, 1, key, nonce) || !add_ad(env, c->enc, argv[2])) { parts_free(&ps); return NULL; }
  long off = update_parts(c->enc, &ps, out);
  parts_free(&ps);
  int fl = 0;
  if (off < 0 || EVP_EncryptFinal_ex(c->enc, out + off, &fl) != 1 ||
      EVP_CIPHER_CTX_ctrl(c->enc, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, out + off + fl) != 1) {
    napi_throw_error(env, "ECRYPTO", "encrypt failed");
    return NULL;
  }
  return NULL;
}

static napi_value open_(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 6) { napi_throw_type_error(env, "EINVAL", "open(key, nonce, ad, parts, tag, dst)"); return NULL; }
  uint8_t *key, *nonce, *tag, *dst;
  size_t tl, dl;
  Parts ps;
  if (!key_nonce(env, argv, &key, &nonce) || !bytes_of(env, argv[4], &tag, &tl) || !bytes_of(env, argv[5], &dst, &dl) || !parts_of(env, argv[3], &ps)) return NULL;
  const char *bad = NULL;
  if (tl != TAG_LEN) bad = "tag must be 16 bytes";
  else if (ps.total != dl) bad = "dst must be as long as the ciphertext";
  /* each part is decrypted onto its own place in dst: it must be that place, or lie outside dst
   * (anywhere else in dst it could be overwritten before it is read) */
  size_t at = 0;
  for (uint32_t i = 0; bad == NULL && i < ps.n; at += ps.at[i].len, i++) {
    const uint8_t *p = ps.at[i].p;
    if (ps.at[i].len > 0 && p != dst + at && p < dst + dl && dst < p + ps.at[i].len) bad = "dst overlaps the ciphertext without being it";
  }
  if (bad != NULL) { parts_free(&ps); napi_throw_range_error(env, "EINVAL", bad); return NULL; }
  uint8_t t[TAG_LEN];
  memcpy(t, tag, TAG_LEN);
  Contexts *c = contexts(env);
  if (!init_ctx(env, &c->dec, 0, key, nonce) || !add_ad(env, c->dec, argv[2])) { parts_free(&ps); return NULL; }
  long off = update_parts(c->dec, &ps, dst);
  parts_free(&ps);
  if (off < 0) { napi_throw_error(env, "ECRYPTO", "decrypt failed"); return NULL; }
  int fl = 0;
  int ok = EVP_CIPHER_CTX_ctrl(c->dec, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, t) == 1 &&
           EVP_DecryptFinal_ex(c->dec, dst + off, &fl) == 1;
  napi_value result;
  napi_get_boolean(env, ok, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  Contexts *c = calloc(1, sizeof *c);
  if (c == NULL || napi_set_instance_data(env, c, free_contexts, NULL) != napi_ok) { free(c); napi_throw_error(env, "ENOMEM", "aead: no memory"); return NULL; }
  napi_property_descriptor props[] = {
    {"seal", NULL, seal, NULL, NULL, NULL, napi_default, NULL},
    {"open", NULL, open_, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
