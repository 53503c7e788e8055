/* The C heap and large buffers' pages.
 *
 * trim: glibc keeps freed memory in its arenas (one per thread that allocated, up to 8 per core),
 * so after a transfer an idle process can sit on tens of MiB that nothing uses; malloc_trim(0)
 * returns every free page of every arena.
 *
 * keepFreed: by default glibc hands the top of its heap back to the kernel as soon as 128 KiB or
 * more of it is free, and takes it again on the next allocation; while blocks move, every such
 * round costs a page fault and a zeroed page per 4 KiB. keepFreed(bytes) lets that much free
 * memory stay (M_TRIM_THRESHOLD, M_TOP_PAD) and serves allocations below `bytes` from the heap
 * rather than from a fresh mapping each (M_MMAP_THRESHOLD); trim() still returns it when idle.
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

static napi_value keep_freed(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int64_t bytes = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int64(env, argv[0], &bytes) != napi_ok || bytes < 0 || bytes > INT32_MAX) {
    napi_throw_range_error(env, "EBADARG", "keepFreed: bytes must be an integer from 0 to 2^31 - 1");
    return NULL;
  }
  int ok = 0;
#ifdef __GLIBC__
  ok = mallopt(M_TRIM_THRESHOLD, (int)bytes) == 1 &&
       mallopt(M_TOP_PAD, (int)bytes) == 1 &&
       mallopt(M_MMAP_THRESHOLD, (int)bytes) == 1;
#endif
  return boolean(env, ok);
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
  size_t length = 0, offset = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, &offset) != napi_ok ||
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
    {"keepFreed", NULL, keep_freed, NULL, NULL, NULL, napi_default, NULL},
    {"hugePages", NULL, huge_pages, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
