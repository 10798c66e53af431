// nftables through libnftables, inside a network namespace (see netlink.h).
//
// libnftables opens its netlink socket when the context is created, so the context is created,
// used and freed entirely while the thread is inside the namespace.

#include <nftables/libnftables.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <nlohmann/json.hpp>

#include "base/text.h"
#include "hv/kernel/netlink.h"

namespace lab::hv::kernel {
namespace {

struct NftCtxDeleter {
  void operator()(nft_ctx* p) const { nft_ctx_free(p); }
};
using NftCtxPtr = std::unique_ptr<nft_ctx, NftCtxDeleter>;

// Runs `commands` (nft syntax, one batch) inside `ns`. On success `output` holds what nft
// printed (JSON when `json`); on failure the Status holds nft's own error text.
Status RunNft(const NetNs& ns, const std::string& commands, bool json, std::string* output) {
  return WithNetNs(ns, [&]() -> Status {
    NftCtxPtr ctx(nft_ctx_new(NFT_CTX_DEFAULT));
    if (!ctx) return Status::Error("nftables: cannot create a context");
    // Buffered, so nothing reaches our stdout/stderr and the text can be returned.
    if (nft_ctx_buffer_output(ctx.get()) != 0 || nft_ctx_buffer_error(ctx.get()) != 0) {
      return Status::Error("nftables: cannot buffer output");
    }
    if (json) nft_ctx_output_set_flags(ctx.get(), nft_ctx_output_get_flags(ctx.get()) | NFT_CTX_OUTPUT_JSON);
    if (nft_run_cmd_from_buffer(ctx.get(), commands.c_str()) != 0) {
      const char* err = nft_ctx_get_error_buffer(ctx.get());
      std::string text = Trim(err ? err : "");
      return Status::Error(text.empty() ? "nftables: command failed" : text);
    }
    if (output) {
      const char* out = nft_ctx_get_output_buffer(ctx.get());
      *output = out ? out : "";
    }
    return Status::Ok();
  });
}

bool IsNftFamily(const std::string& family) {
  return family == "ip" || family == "ip6" || family == "inet" || family == "arp" || family == "bridge" ||
         family == "netdev";
}

// nft's unquoted identifier: a letter or '_' first, then letters, digits and "/\-_.". Checking it
// keeps a name from smuggling extra commands into the text given to nft.
bool IsNftIdentifier(const std::string& name) {
  if (name.empty() || name.size() > 255) return false;
  if (!std::isalpha(static_cast<unsigned char>(name[0])) && name[0] != '_') return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.' && c != '/') return false;
  }
  return true;
}

}  // namespace

Status NftApply(const NetNs& ns, const std::string& ruleset) {
  return RunNft(ns, ruleset, false, nullptr).Prefixed("nftables ruleset");
}

Result<std::vector<std::string>> NftListTables(const NetNs& ns) {
  std::string out;
  LAB_RETURN_IF_ERROR(RunNft(ns, "list tables", true, &out).Prefixed("list nftables tables"));
  std::vector<std::string> tables;
  // {"nftables": [{"metainfo": {...}}, {"table": {"family": "ip", "name": "x", "handle": 1}}, ...]}
  nlohmann::json doc = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::Error("list nftables tables: unexpected output from libnftables");
  }
  auto items = doc.find("nftables");
  if (items == doc.end() || !items->is_array()) return tables;
  for (const auto& item : *items) {
    if (!item.is_object()) continue;
    auto table = item.find("table");
    if (table == item.end() || !table->is_object()) continue;
    auto family = table->find("family");
    auto name = table->find("name");
    if (family == table->end() || name == table->end() || !family->is_string() || !name->is_string()) continue;
    tables.push_back(family->get<std::string>() + " " + name->get<std::string>());
  }
  return tables;
}

Result<std::vector<std::string>> NftListChains(const NetNs& ns, const std::string& family, const std::string& table) {
  const std::string what = "list chains of nftables table " + family + " " + table;
  if (!IsNftFamily(family) || !IsNftIdentifier(table)) return Status::Error(what + ": not a valid table");
  auto tables = NftListTables(ns);
  if (!tables.ok()) return tables.status().Prefixed(what);
  std::vector<std::string> chains;
  if (std::find(tables->begin(), tables->end(), family + " " + table) == tables->end()) return chains;
  std::string out;
  LAB_RETURN_IF_ERROR(RunNft(ns, "list table " + family + " " + table, true, &out).Prefixed(what));
  nlohmann::json doc = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("nftables") || !doc["nftables"].is_array())
    return chains;
  for (const auto& item : doc["nftables"])
    if (item.is_object() && item.contains("chain") && item["chain"].is_object() && item["chain"].contains("name"))
      chains.push_back(item["chain"]["name"].get<std::string>());
  return chains;
}

Result<std::optional<std::string>> NftListTable(const NetNs& ns, const std::string& family, const std::string& table) {
  const std::string what = "list nftables table " + family + " " + table;
  if (!IsNftFamily(family) || !IsNftIdentifier(table)) return Status::Error(what + ": not a valid table");
  std::string out;
  Status st = RunNft(ns, "list table " + family + " " + table, true, &out);
  if (!st.ok() && st.message().find("No such file or directory") != std::string::npos)
    return std::optional<std::string>();
  if (!st.ok()) return st.Prefixed(what);
  return std::optional<std::string>(out);
}

Status NftDeleteTable(const NetNs& ns, const std::string& family, const std::string& name) {
  const std::string what = "delete nftables table " + family + " " + name;
  if (!IsNftFamily(family)) return Status::Error(what + ": unknown family (ip, ip6, inet, arp, bridge, netdev)");
  if (!IsNftIdentifier(name)) return Status::Error(what + ": not a valid table name");
  auto tables = NftListTables(ns);
  if (!tables.ok()) return tables.status().Prefixed(what);
  bool present = false;
  for (const auto& t : *tables) present = present || t == family + " " + name;
  if (!present) return Status::Ok();
  Status st = RunNft(ns, "delete table " + family + " " + name, false, nullptr);
  // Gone between the listing and the delete: still "already gone".
  if (!st.ok() && st.message().find("No such file or directory") != std::string::npos) return Status::Ok();
  return st.Prefixed(what);
}

}  // namespace lab::hv::kernel
