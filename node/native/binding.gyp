{
  "targets": [
    {
      "target_name": "fsx",
      "sources": ["fsx.c"],
      "cflags": ["-O2", "-Wall"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    },
    {
      "target_name": "aead",
      "sources": ["aead.c"],
      "cflags": ["-O2", "-Wall"],
      "defines": ["NAPI_VERSION=8"]
    },
    {
      "target_name": "zstd",
      "sources": ["zstd.c"],
      "cflags": ["-O2", "-Wall"],
      "defines": ["NAPI_VERSION=8"],
      "libraries": ["-ldl"]
    },
    {
      "target_name": "heap",
      "sources": ["heap.c"],
      "cflags": ["-O2", "-Wall"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
