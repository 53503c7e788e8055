/* The C heap and large buffers' pages.
 *
 * trim: glibc keeps freed memory in its arenas (one per thread that allocated, up to 8 per core),
 * so after a transfer an idle process can sit on tens of MiB that nothing uses; malloc_trim(0)
 * returns every free page of every arena.
 *
 * hugePages: asks the kernel to back the 2 MiB-aligned part of a buffer with huge pages
 * (madvise MADV_HUGEPAGE): a large buffer touched for the first time then takes one fault per
 * 2 MiB instead of one per 4 KiB. False where the kernel does not offer it. */
#include <node_api.h>
#include <stdint.h>
#include <sys/mman.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static napi_value boolean(napi_env env, int value) {
  napi_value out;
  napi_get_boolean(env, value != 0, &out);
  return out;
}

static napi_value trim(napi_env env, napi_callback_info info) {
  int released = 0;
#ifdef __GLIBC__
  released = malloc_trim(0);
#endif
  return boolean(env, released);
}

#define HUGE_PAGE ((uintptr_t)2 << 20)

static napi_value huge_pages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool is_typed = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_is_typedarray(env, argv[0], &is_typed) != napi_ok || !is_typed) {
    napi_throw_type_error(env, "EBADARG", "hugePages: expected a typed array");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    napi_throw_type_error(env, "EBADARG", "hugePages: expected a Uint8Array");
    return NULL;
  }
  int ok = 0;
#ifdef MADV_HUGEPAGE
  uintptr_t start = ((uintptr_t)data + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  uintptr_t end = ((uintptr_t)data + length) & ~(HUGE_PAGE - 1);
  if (end > start) ok = madvise((void *)start, end - start, MADV_HUGEPAGE) == 0;
#endif
  return boolean(env, ok);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"trim", NULL, trim, NULL, NULL, NULL, napi_default, NULL},
    {"hugePages", NULL, huge_pages, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
