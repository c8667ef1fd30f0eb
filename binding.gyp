{
  "targets": [
    {
      "target_name": "nexres",
      "sources": [
        "native/addon/addon.cpp",
        "native/addon/common.cpp",
        "native/addon/js_consumer.cpp",
        "native/addon/js_engine.cpp",
        "native/addon/options.cpp",
        "native/addon/producer.cpp",
        "native/addon/shared_engine.cpp",
        "native/addon/stats.cpp",
        "native/core/acceptor.cpp",
        "native/core/auth.cpp",
        "native/core/chunk_pool.cpp",
        "native/core/client_session.cpp",
        "native/core/client_auth.cpp",
        "native/core/handshake_budget.cpp",
        "native/core/verify_pool.cpp",
        "native/core/client_memory.cpp",
        "native/core/crypto.cpp",
        "native/core/dispatcher.cpp",
        "native/core/inbound_session.cpp",
        "native/core/inbound_handshake.cpp",
        "native/core/inbound_control.cpp",
        "native/core/engine.cpp",
        "native/core/engine_connections.cpp",
        "native/core/gather_writer.cpp",
        "native/core/io_pool.cpp",
        "native/core/outbound_batch.cpp",
        "native/core/receive_buffer.cpp",
        "native/core/peer_link.cpp",
        "native/core/peer_link_handshake.cpp",
        "native/core/sockets.cpp"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!(node tools/find-asio.cjs)",
        "native/core"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "ASIO_STANDALONE",
        "ASIO_NO_DEPRECATED"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-O3", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "GCC_ENABLE_CPP_RTTI": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "MACOSX_DEPLOYMENT_TARGET": "11.0",
        "OTHER_CPLUSPLUSFLAGS": ["-O3"]
      },
      "libraries": ["-lpthread"]
    }
  ]
}
