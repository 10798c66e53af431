// `lab image ...`: the image cache (images/cache.h) with the labs that use it (state::Store).
#include <ctime>
#include <set>

#include "base/text.h"
#include "engine/engine.h"
#include "images/cache.h"
#include "images/import.h"

namespace lab::engine {

namespace {

ImageRow RowOf(const images::Meta& m, const std::vector<state::ImageUse>& uses,
               const std::map<std::string, std::vector<std::string>>& children) {
  ImageRow r{m.name, m.key, m.kind, m.source, m.size, m.created, m.last_used, {}};
  // A lab on an image layered over this one uses this one too.
  std::vector<std::string> todo = {m.key};
  std::set<std::string> labs;
  while (!todo.empty()) {
    std::string k = todo.back();
    todo.pop_back();
    for (const auto& u : uses)
      if (u.key == k) labs.insert(u.lab);
    if (auto it = children.find(k); it != children.end()) todo.insert(todo.end(), it->second.begin(), it->second.end());
  }
  r.used_by.assign(labs.begin(), labs.end());
  return r;
}

std::map<std::string, std::vector<std::string>> Children(const std::vector<images::Meta>& all) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& m : all)
    if (!m.parent_key.empty()) out[m.parent_key].push_back(m.key);
  return out;
}

}  // namespace

std::vector<ImageRow> Engine::Images() {
  images::Cache cache(options_.state_dir);
  auto all = cache.List();
  auto uses = store_->ImageUses();
  auto children = Children(all);
  std::vector<ImageRow> out;
  for (const auto& m : all) out.push_back(RowOf(m, uses, children));
  return out;
}

Result<ImageRow> Engine::ImportImage(const std::string& path, const std::string& name,
                                     const std::function<void(const std::string&)>& progress) {
  if (auto why = schema::CheckImageName(name); !why.empty())
    return Status::Error("image name '" + name + "' " + why);
  auto spec = images::DetectImport(path, name);
  if (!spec) return spec.status();
  images::Cache cache(options_.state_dir);
  auto digest = images::SourceDigest(*spec, "", cache);
  if (!digest) return digest.status();
  std::string key = images::ImageKey(*spec, "", images::kImportVersion, *digest);
  if (!cache.Lookup(key)) {
    auto lock = cache.Lock(key);
    if (!lock) return lock.status();
    if (!cache.Lookup(key)) {
      if (progress) progress("image '" + name + "': importing " + schema::ToString(spec->kind) + " " + spec->path);
      auto staging = cache.Staging(key);
      if (!staging) return staging.status();
      images::Meta meta;
      meta.name = name;
      meta.kind = schema::ToString(spec->kind);
      meta.source = std::string(schema::ToString(spec->kind)) + " " + spec->path;
      lab::Status st = images::ImportTree(*spec, "", *staging / "rootfs");
      if (st.ok()) st = cache.Commit(*staging, key, meta);
      if (!st.ok()) {
        std::error_code ec;
        std::filesystem::remove_all(*staging, ec);
        return st;
      }
    }
  }
  auto meta = cache.Lookup(key);
  if (!meta) return Status::Error("image '" + name + "': not in the cache after its import");
  return RowOf(*meta, store_->ImageUses(), Children(cache.List()));
}

Result<ImageRow> Engine::RemoveImage(const std::string& name_or_key) {
  images::Cache cache(options_.state_dir);
  auto meta = cache.Find(name_or_key);
  if (!meta) return meta.status();
  auto all = cache.List();
  auto children = Children(all);
  ImageRow row = RowOf(*meta, store_->ImageUses(), children);
  if (!row.used_by.empty())
    return Status::Error("image '" + row.name + "' (" + row.key.substr(0, 12) + ") is used by lab" +
                         (row.used_by.size() > 1 ? "s " : " ") + Join(row.used_by, ", ") +
                         "; nothing was removed: take " + (row.used_by.size() > 1 ? "them" : "it") +
                         " down first (lab down LAB)");
  if (auto it = children.find(row.key); it != children.end() && !it->second.empty()) {
    std::vector<std::string> names;
    for (const auto& m : all)
      if (std::find(it->second.begin(), it->second.end(), m.key) != it->second.end())
        names.push_back(m.name + " (" + m.key.substr(0, 12) + ")");
    return Status::Error("image '" + row.name + "' is the parent of " + Join(names, ", ") +
                         "; nothing was removed: remove those first");
  }
  auto lock = cache.Lock(row.key);
  if (!lock) return lock.status();
  LAB_RETURN_IF_ERROR(cache.Remove(row.key));
  return row;
}

Result<std::vector<ImageRow>> Engine::PruneImages(int days) {
  images::Cache cache(options_.state_dir);
  const int64_t cutoff = static_cast<int64_t>(std::time(nullptr)) - static_cast<int64_t>(days) * 86400;
  std::vector<ImageRow> removed;
  // Children first: a parent goes only once nothing is layered on it any more.
  for (bool again = true; again;) {
    again = false;
    auto all = cache.List();
    auto children = Children(all);
    auto uses = store_->ImageUses();
    for (const auto& m : all) {
      ImageRow row = RowOf(m, uses, children);
      if (!row.used_by.empty() || children.count(m.key) || m.last_used > cutoff) continue;
      auto lock = cache.Lock(m.key);
      if (!lock) return lock.status();
      LAB_RETURN_IF_ERROR(cache.Remove(m.key));
      removed.push_back(row);
      again = true;
    }
  }
  return removed;
}

}  // namespace lab::engine
