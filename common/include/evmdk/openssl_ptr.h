#pragma once
// RAII owners of OpenSSL objects, so no error path leaks a digest context.
#include <openssl/evp.h>

#include <memory>

namespace evmdk {

struct EvpMdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
};
struct EvpMdDeleter {
  void operator()(EVP_MD* md) const noexcept { EVP_MD_free(md); }
};

using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, EvpMdCtxDeleter>;
using EvpMdPtr = std::unique_ptr<EVP_MD, EvpMdDeleter>;  // from EVP_MD_fetch

}  // namespace evmdk
