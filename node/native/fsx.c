/* Filesystem calls Node's fs module lacks: xattrs without following links,
 * nanosecond timestamps, device nodes, hole/data ranges of sparse files, and reads that
 * return only what the page cache holds. */
#include <node_api.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>

#define PATH_MAX_LEN 8192

static napi_value throw_errno(napi_env env, int err, const char *call, const char *path) {
  char msg[PATH_MAX_LEN + 128];
  snprintf(msg, sizeof msg, "%s: %s '%s'", call, strerror(err), path ? path : "");
  napi_value code, message, error;
  const char *name = "EIO";
  switch (err) {
    case ENOENT: name = "ENOENT"; break;
    case EACCES: name = "EACCES"; break;
    case EPERM: name = "EPERM"; break;
    case ENOTSUP: name = "ENOTSUP"; break;
    case ENOSPC: name = "ENOSPC"; break;
    case EEXIST: name = "EEXIST"; break;
    case ENODATA: name = "ENODATA"; break;
    case EROFS: name = "EROFS"; break;
    case E2BIG: name = "E2BIG"; break;
    case ERANGE: name = "ERANGE"; break;
    case ENAMETOOLONG: name = "ENAMETOOLONG"; break;
    case ELOOP: name = "ELOOP"; break;
    case ENOTDIR: name = "ENOTDIR"; break;
    case EDQUOT: name = "EDQUOT"; break;
    case EINVAL: name = "EINVAL"; break;
    case EBADF: name = "EBADF"; break;
  }
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_value errnoVal;
  napi_create_int32(env, -err, &errnoVal);
  napi_set_named_property(env, error, "errno", errnoVal);
  napi_set_named_property(env, error, "code", code);
  napi_throw(env, error);
  return NULL;
}

/* Paths come in as Buffers so that non-UTF-8 names survive. Returns malloc'd NUL-terminated copy. */
static char *arg_path(napi_env env, napi_value v) {
  bool isbuf = false;
  napi_is_buffer(env, v, &isbuf);
  if (isbuf) {
    void *data; size_t len;
    napi_get_buffer_info(env, v, &data, &len);
    if (memchr(data, 0, len) != NULL) { napi_throw_type_error(env, "EINVAL", "path contains NUL"); return NULL; }
    char *p = malloc(len + 1);
    memcpy(p, data, len); p[len] = 0;
    return p;
  }
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) { napi_throw_type_error(env, "EINVAL", "path must be a Buffer or string"); return NULL; }
  char *p = malloc(len + 1);
  napi_get_value_string_utf8(env, v, p, len + 1, &len);
  return p;
}

static char *arg_string(napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) { napi_throw_type_error(env, "EINVAL", "expected string"); return NULL; }
  char *p = malloc(len + 1);
  napi_get_value_string_utf8(env, v, p, len + 1, &len);
  return p;
}

/* llistxattr + lgetxattr: returns array of [name, Buffer] pairs. */
static napi_value get_xattrs(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char *path = arg_path(env, argv[0]);
  if (!path) return NULL;
  ssize_t size = llistxattr(path, NULL, 0);
  if (size < 0) {
    int e = errno; napi_value r;
    if (e == ENOTSUP) { free(path); napi_create_array(env, &r); return r; }
    throw_errno(env, e, "llistxattr", path); free(path); return NULL;
  }
  char *names = malloc(size > 0 ? size : 1);
  size = llistxattr(path, names, size);
  if (size < 0) { int e = errno; free(names); throw_errno(env, e, "llistxattr", path); free(path); return NULL; }
  napi_value result; napi_create_array(env, &result);
  uint32_t idx = 0;
  for (char *n = names; n < names + size; n += strlen(n) + 1) {
    ssize_t vlen = lgetxattr(path, n, NULL, 0);
    if (vlen < 0) { if (errno == ENODATA) continue; int e = errno; free(names); throw_errno(env, e, "lgetxattr", path); free(path); return NULL; }
    char *val = malloc(vlen > 0 ? vlen : 1);
    vlen = lgetxattr(path, n, val, vlen);
    if (vlen < 0) { int e = errno; free(val); free(names); throw_errno(env, e, "lgetxattr", path); free(path); return NULL; }
    napi_value pair, jn, jv; void *dst;
    napi_create_array_with_length(env, 2, &pair);
    napi_create_string_utf8(env, n, NAPI_AUTO_LENGTH, &jn);
    napi_create_buffer_copy(env, vlen, val, &dst, &jv);
    napi_set_element(env, pair, 0, jn);
    napi_set_element(env, pair, 1, jv);
    napi_set_element(env, result, idx++, pair);
    free(val);
  }
  free(names); free(path);
  return result;
}

static napi_value set_xattr(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char *path = arg_path(env, argv[0]); if (!path) return NULL;
  char *name = arg_string(env, argv[1]); if (!name) { free(path); return NULL; }
  void *data; size_t len;
  napi_get_buffer_info(env, argv[2], &data, &len);
  if (lsetxattr(path, name, data, len, 0) < 0) { int e = errno; throw_errno(env, e, "lsetxattr", path); free(name); free(path); return NULL; }
  free(name); free(path);
  return NULL;
}

static napi_value remove_xattr(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char *path = arg_path(env, argv[0]); if (!path) return NULL;
  char *name = arg_string(env, argv[1]); if (!name) { free(path); return NULL; }
  if (lremovexattr(path, name) < 0 && errno != ENODATA) { int e = errno; throw_errno(env, e, "lremovexattr", path); free(name); free(path); return NULL; }
  free(name); free(path);
  return NULL;
}

static int64_t arg_i64(napi_env env, napi_value v) {
  int64_t out = 0; bool lossless;
  napi_valuetype t; napi_typeof(env, v, &t);
  if (t == napi_bigint) napi_get_value_bigint_int64(env, v, &out, &lossless);
  else napi_get_value_int64(env, v, &out);
  return out;
}

/* lutimes with nanoseconds: (path, atimeSec, atimeNsec, mtimeSec, mtimeNsec), never follows a symlink. */
static napi_value set_times(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char *path = arg_path(env, argv[0]); if (!path) return NULL;
  struct timespec ts[2];
  ts[0].tv_sec = arg_i64(env, argv[1]); ts[0].tv_nsec = arg_i64(env, argv[2]);
  ts[1].tv_sec = arg_i64(env, argv[3]); ts[1].tv_nsec = arg_i64(env, argv[4]);
  if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0) { int e = errno; throw_errno(env, e, "utimensat", path); free(path); return NULL; }
  free(path);
  return NULL;
}

/* mknod(path, mode, major, minor) for char/block devices, fifos and sockets. */
static napi_value make_node(napi_env env, napi_callback_info info) {
  size_t argc = 4; napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char *path = arg_path(env, argv[0]); if (!path) return NULL;
  uint32_t mode, maj, min;
  napi_get_value_uint32(env, argv[1], &mode);
  napi_get_value_uint32(env, argv[2], &maj);
  napi_get_value_uint32(env, argv[3], &min);
  if (mknod(path, mode, makedev(maj, min)) < 0) { int e = errno; throw_errno(env, e, "mknod", path); free(path); return NULL; }
  free(path);
  return NULL;
}

/* Data ranges of an open file: array of [offset, length] using SEEK_DATA/SEEK_HOLE. */
static napi_value data_ranges(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd; napi_get_value_int32(env, argv[0], &fd);
  int64_t size = arg_i64(env, argv[1]);
  napi_value result; napi_create_array(env, &result);
  uint32_t idx = 0;
  off_t pos = 0;
  while (pos < size) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;
      if (errno == EINVAL || errno == ENOTSUP) { data = pos; }
      else { int e = errno; return throw_errno(env, e, "lseek", "fd"); }
    }
    if (data >= size) break;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0 || hole > size) hole = size;
    napi_value pair, a, b;
    napi_create_array_with_length(env, 2, &pair);
    napi_create_int64(env, data, &a);
    napi_create_int64(env, hole - data, &b);
    napi_set_element(env, pair, 0, a);
    napi_set_element(env, pair, 1, b);
    napi_set_element(env, result, idx++, pair);
    pos = hole;
  }
  return result;
}

/* readCached(fd, buffer, position): pread that never waits for the disk (preadv2 with
 * RWF_NOWAIT). Returns the bytes read, which may be fewer than asked (the rest is not cached,
 * or the file ends), or -1 when nothing could be read without waiting or the kernel or
 * filesystem does not offer such reads; the caller then reads the ordinary way. */
static napi_value read_cached(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd; napi_get_value_int32(env, argv[0], &fd);
  void *data = NULL; size_t len = 0;
  if (napi_get_typedarray_info(env, argv[1], NULL, &len, &data, NULL, NULL) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "readCached: buffer must be a Uint8Array");
    return NULL;
  }
  int64_t pos = arg_i64(env, argv[2]);
  ssize_t n = -1;
#ifdef RWF_NOWAIT
  struct iovec iov = { data, len };
  do { n = preadv2(fd, &iov, 1, (off_t)pos, RWF_NOWAIT); } while (n < 0 && errno == EINTR);
  if (n < 0 && errno != EAGAIN && errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL) {
    int e = errno;
    return throw_errno(env, e, "preadv2", "fd");
  }
#endif
  napi_value out;
  napi_create_int64(env, n < 0 ? -1 : (int64_t)n, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"getXattrs", NULL, get_xattrs, NULL, NULL, NULL, napi_default, NULL},
    {"setXattr", NULL, set_xattr, NULL, NULL, NULL, napi_default, NULL},
    {"removeXattr", NULL, remove_xattr, NULL, NULL, NULL, napi_default, NULL},
    {"setTimes", NULL, set_times, NULL, NULL, NULL, napi_default, NULL},
    {"makeNode", NULL, make_node, NULL, NULL, NULL, napi_default, NULL},
    {"dataRanges", NULL, data_ranges, NULL, NULL, NULL, napi_default, NULL},
    {"readCached", NULL, read_cached, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
