/* Reading a Uint8Array argument, for the addons that take byte buffers (aead.c, zstd.c). */
#ifndef IMGMESH_NATIVE_BYTES_H
#define IMGMESH_NATIVE_BYTES_H
#include <node_api.h>
#include <stdint.h>

/* The bytes of v, or 0 with a TypeError thrown when v is not a Uint8Array. */
static int bytes_of(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is = false;
  napi_is_typedarray(env, v, &is);
  napi_typedarray_type type = napi_int8_array;
  void *p = NULL;
  if (is) napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL);
  if (!is || type != napi_uint8_array) { napi_throw_type_error(env, "EINVAL", "expected a Uint8Array"); return 0; }
  *data = (uint8_t *)p;
  return 1;
}

#endif
