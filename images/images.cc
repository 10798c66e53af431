#include "images/images.h"

#include <set>

#include "images/debian.h"
#include "images/import.h"

namespace lab::images {

namespace {

std::string Q(const std::string& s) { return "'" + s + "'"; }

bool IsImport(schema::ImageKind k) {
  return k == schema::ImageKind::kRootfs || k == schema::ImageKind::kOci || k == schema::ImageKind::kDockerArchive;
}

std::string SourceText(const schema::Image& i) {
  switch (i.kind) {
    case schema::ImageKind::kDebian:
      return "debian " + i.suite + " (" + i.variant + ")" +
             (i.packages.empty() ? "" : " + " + std::to_string(i.packages.size()) + " packages");
    case schema::ImageKind::kFrom:
      return "from " + i.from + (i.packages.empty() ? "" : " + " + std::to_string(i.packages.size()) + " packages");
    case schema::ImageKind::kOci:
      return "oci " + i.path + (i.ref.empty() ? "" : ":" + i.ref);
    default:
      return std::string(schema::ToString(i.kind)) + " " + i.path;
  }
}

class Maker {
 public:
  Maker(const schema::Lab& lab, Cache& cache, const EnsureOptions& options)
      : lab_(lab), cache_(cache), options_(options), lab_dir_(fs::absolute(lab.file).parent_path()) {}

  Result<Resolved> Ensure(const std::string& name, int depth = 0) {
    if (auto it = done_.find(name); it != done_.end()) return it->second;
    const schema::Image* spec = lab_.FindImage(name);
    if (!spec) return Status::Error("image " + Q(name) + " is not declared under images:");
    if (depth > 64) return Status::Error("image " + Q(name) + ": from: chain too deep");
    Resolved out;
    out.name = name;
    out.kind = schema::ToString(spec->kind);
    out.source = SourceText(*spec);
    std::string parent_key;
    std::vector<fs::path> parent_layers;
    if (spec->kind == schema::ImageKind::kFrom) {
      auto parent = Ensure(spec->from, depth + 1);
      if (!parent) return parent.status();
      if (parent->key.empty() || !parent->cached) {
        done_[name] = out;  // unknown until the parent is made
        return out;
      }
      parent_key = parent->key;
      parent_layers = parent->layers;
    }
    // The key: an import's from its source; a build's from its pin, else a resolution.
    std::string resolved;
    std::string builder = IsImport(spec->kind) ? kImportVersion : kDebianBuilderVersion;
    std::string pin = SpecDigest(*spec, parent_key, builder);
    if (IsImport(spec->kind)) {
      auto digest = SourceDigest(*spec, lab_dir_, cache_);
      if (!digest) return digest.status();
      out.key = ImageKey(*spec, parent_key, builder, *digest);
    } else if (auto pinned = cache_.Pinned(pin);
               pinned && !options_.refresh && (!options_.make || cache_.Lookup(*pinned))) {
      // A pin whose entry is gone (removed, or its build killed) is resolved again below: the
      // build asks the archive anyway, and the key must name what it installs.
      out.key = *pinned;
    } else if (options_.make) {
      Say("image " + Q(name) + ": resolving packages");
      BuildProgress progress{options_.progress ? [this, name](const std::string& s) { Say("image " + Q(name) + ": " + s); }
                                               : std::function<void(const std::string&)>(),
                             {}, cache_.root()};
      auto r = ResolveDebian(*spec, parent_layers, lab_.file, progress);
      if (!r) return r.status();
      resolved = *r;
      out.key = ImageKey(*spec, parent_key, builder, resolved);
    } else {
      done_[name] = out;  // `lab plan` does not ask a mirror: the key is known once built
      return out;
    }
    if (!cache_.Lookup(out.key)) {
      if (!options_.make) {
        done_[name] = out;
        return out;
      }
      LAB_RETURN_IF_ERROR(Make(*spec, out, parent_key, parent_layers));
    }
    if (!IsImport(spec->kind)) LAB_RETURN_IF_ERROR(cache_.Pin(pin, out.key));
    auto layers = cache_.Layers(out.key);
    if (!layers) return layers.status();
    out.layers = *layers;
    out.cached = true;
    done_[name] = out;
    return out;
  }

 private:
  Status Make(const schema::Image& spec, const Resolved& out, const std::string& parent_key,
              const std::vector<fs::path>& parent_layers) {
    auto lock = cache_.Lock(out.key);
    if (!lock) return lock.status();
    if (cache_.Lookup(out.key)) return Status::Ok();  // another lab made it while we waited
    auto staging = cache_.Staging(out.key);
    if (!staging) return staging.status();
    Meta meta;
    meta.name = spec.name;
    meta.kind = schema::ToString(spec.kind);
    meta.parent_key = parent_key;
    meta.source = out.source;
    Status st;
    if (IsImport(spec.kind)) {
      Say("image " + Q(spec.name) + ": importing " + out.source);
      st = ImportTree(spec, lab_dir_, *staging / "rootfs");
    } else {
      Say("image " + Q(spec.name) + ": building " + out.source);
      BuildProgress progress{options_.progress
                                 ? [this, n = spec.name](const std::string& s) { Say("image " + Q(n) + ": " + s); }
                                 : std::function<void(const std::string&)>(),
                             *staging / "build.log", cache_.root()};
      st = BuildDebian(spec, parent_layers, *staging, lab_.file, progress);
    }
    if (st.ok()) st = cache_.Commit(*staging, out.key, meta);
    if (!st.ok()) {
      std::error_code ec;
      fs::remove_all(*staging, ec);
    }
    return st;
  }

  void Say(const std::string& line) {
    if (options_.progress) options_.progress(line);
  }

  const schema::Lab& lab_;
  Cache& cache_;
  const EnsureOptions& options_;
  fs::path lab_dir_;
  std::map<std::string, Resolved> done_;
};

}  // namespace

Result<std::map<std::string, Resolved>> EnsureImages(const schema::Lab& lab, Cache& cache, const EnsureOptions& options) {
  std::set<std::string> used;
  for (const auto& m : lab.machines)
    if (m.image != schema::kHostImage) used.insert(m.image);
  Maker maker(lab, cache, options);
  std::map<std::string, Resolved> out;
  for (const auto& image : lab.images) {  // file order: the first error is the first image's
    if (!used.count(image.name)) continue;
    auto r = maker.Ensure(image.name);
    if (!r) return r.status();
    out[image.name] = *r;
  }
  return out;
}

Result<Resolved> EnsureImage(const schema::Lab& lab, const std::string& image, Cache& cache,
                             const EnsureOptions& options) {
  Maker maker(lab, cache, options);
  return maker.Ensure(image);
}

}  // namespace lab::images
