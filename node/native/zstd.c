/* zstd one-shot compression and decompression of blocks with one context each, kept for the
 * life of the JavaScript environment. Node's zlib makes a new zstd context for every call, and a
 * level-3 context is a few hundred KiB of tables that are allocated, touched and freed each time:
 * for 64 KiB blocks that costs more than the compression itself.
 *
 * The library is the zstd that Node links (22.15 and later export its symbols). Its functions are
 * looked up at load time, so on a Node without them the addon still loads and says so
 * (`available` false) instead of failing at the first call.
 *
 *   compress(src, level) -> Buffer: one zstd frame with the content size in its header.
 *   decompress(frame, dst) -> number: bytes written to dst (at most dst.length), or throws. */
#define _GNU_SOURCE
#include <node_api.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include "bytes.h"

typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct ZSTD_DCtx_s ZSTD_DCtx;

static ZSTD_CCtx *(*p_createCCtx)(void);
static size_t (*p_freeCCtx)(ZSTD_CCtx *);
static ZSTD_DCtx *(*p_createDCtx)(void);
static size_t (*p_freeDCtx)(ZSTD_DCtx *);
static size_t (*p_compressCCtx)(ZSTD_CCtx *, void *, size_t, const void *, size_t, int);
static size_t (*p_decompressDCtx)(ZSTD_DCtx *, void *, size_t, const void *, size_t);
static size_t (*p_compressBound)(size_t);
static unsigned (*p_isError)(size_t);
static const char *(*p_getErrorName)(size_t);

static int resolve(void) {
  p_createCCtx = dlsym(RTLD_DEFAULT, "ZSTD_createCCtx");
  p_freeCCtx = dlsym(RTLD_DEFAULT, "ZSTD_freeCCtx");
  p_createDCtx = dlsym(RTLD_DEFAULT, "ZSTD_createDCtx");
  p_freeDCtx = dlsym(RTLD_DEFAULT, "ZSTD_freeDCtx");
  p_compressCCtx = dlsym(RTLD_DEFAULT, "ZSTD_compressCCtx");
  p_decompressDCtx = dlsym(RTLD_DEFAULT, "ZSTD_decompressDCtx");
  p_compressBound = dlsym(RTLD_DEFAULT, "ZSTD_compressBound");
  p_isError = dlsym(RTLD_DEFAULT, "ZSTD_isError");
  p_getErrorName = dlsym(RTLD_DEFAULT, "ZSTD_getErrorName");
  return p_createCCtx && p_freeCCtx && p_createDCtx && p_freeDCtx && p_compressCCtx &&
         p_decompressDCtx && p_compressBound && p_isError && p_getErrorName;
}

typedef struct {
  ZSTD_CCtx *c;
  ZSTD_DCtx *d;
  uint8_t *scratch;
  size_t scratch_len;
} State;

static void free_state(napi_env env, void *data, void *hint) {
  State *s = (State *)data;
  if (s->c != NULL) p_freeCCtx(s->c);
  if (s->d != NULL) p_freeDCtx(s->d);
  free(s->scratch);
  free(s);
}

static State *state(napi_env env) {
  State *s = NULL;
  napi_get_instance_data(env, (void **)&s);
  return s;
}

static napi_value compress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint8_t *src;
  size_t n;
  int32_t level = 3;
  if (argc != 2 || !bytes_of(env, argv[0], &src, &n)) return NULL;
  if (napi_get_value_int32(env, argv[1], &level) != napi_ok) { napi_throw_type_error(env, "EINVAL", "level must be a number"); return NULL; }
  State *s = state(env);
  if (s->c == NULL && (s->c = p_createCCtx()) == NULL) { napi_throw_error(env, "ENOMEM", "ZSTD_createCCtx failed"); return NULL; }
  size_t bound = p_compressBound(n);
  if (s->scratch_len < bound) {
    uint8_t *grown = realloc(s->scratch, bound);
    if (grown == NULL) { napi_throw_error(env, "ENOMEM", "no memory for the compressed block"); return NULL; }
    s->scratch = grown;
    s->scratch_len = bound;
  }
  size_t z = p_compressCCtx(s->c, s->scratch, s->scratch_len, src, n, level);
  if (p_isError(z)) { napi_throw_error(env, "EIO", p_getErrorName(z)); return NULL; }
  napi_value out;
  void *copy;
  napi_create_buffer_copy(env, z, s->scratch, &copy, &out);
  return out;
}

static napi_value decompress(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint8_t *src, *dst;
  size_t n, cap;
  if (argc != 2 || !bytes_of(env, argv[0], &src, &n) || !bytes_of(env, argv[1], &dst, &cap)) return NULL;
  State *s = state(env);
  if (s->d == NULL && (s->d = p_createDCtx()) == NULL) { napi_throw_error(env, "ENOMEM", "ZSTD_createDCtx failed"); return NULL; }
  size_t r = p_decompressDCtx(s->d, dst, cap, src, n);
  if (p_isError(r)) { napi_throw_error(env, "EPROTOCOL", p_getErrorName(r)); return NULL; }
  napi_value out;
  napi_create_double(env, (double)r, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value available;
  int ok = resolve();
  napi_get_boolean(env, ok, &available);
  napi_set_named_property(env, exports, "available", available);
  if (!ok) return exports;
  State *s = calloc(1, sizeof *s);
  if (s == NULL || napi_set_instance_data(env, s, free_state, NULL) != napi_ok) { free(s); napi_throw_error(env, "ENOMEM", "zstd: no memory"); return NULL; }
  napi_property_descriptor props[] = {
    {"compress", NULL, compress, NULL, NULL, NULL, napi_default, NULL},
    {"decompress", NULL, decompress, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
