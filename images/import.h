// Imported images: `rootfs:` (a directory, or a tar with any compression), `oci:` (an OCI image
// layout: index.json -> manifest -> layers) and `docker_archive:` (a `docker save` tar:
// manifest.json -> layers). No registry is contacted, ever.
//
// Layers are applied in order as umoci does: a `.wh.NAME` entry removes NAME from the layers
// below, a `.wh..wh..opq` entry empties its directory of what the layers below put there. Every
// blob an OCI manifest names is checked against its sha256 digest. Entries that would land
// outside the tree ("..", through a symlink) are refused.
#pragma once

#include <filesystem>
#include <string>

#include "base/status.h"
#include "images/cache.h"
#include "schema/lab.h"

namespace lab::images {

/// Changes whenever the importer's output for the same source changes: part of every key.
inline constexpr const char* kImportVersion = "import-1";

/// The digest that keys an import: the sha256 of a tar or docker-save file (remembered in
/// `cache` by path, size and mtime, so an unchanged file is not read again), the manifest digest
/// of an OCI layout, or for a directory a sha256 over its entries' paths, types, modes, owners,
/// sizes, mtimes and link targets. An error names the image and the missing source.
Result<std::string> SourceDigest(const schema::Image& spec, const fs::path& lab_dir, Cache& cache);

/// Unpacks the import `spec` into `dest` (made, must not exist): the image's whole tree.
Status ImportTree(const schema::Image& spec, const fs::path& lab_dir, const fs::path& dest);

/// What `lab image import PATH` makes of PATH: an OCI layout (a directory with index.json), a
/// `docker save` tar (a tar with manifest.json at its top), or a rootfs (any other directory or
/// tar). An error when PATH does not exist.
Result<schema::Image> DetectImport(const fs::path& path, const std::string& name);

/// Applies one layer tar (any compression) over `dest`, whiteouts included.
Status ApplyLayer(const fs::path& layer, const fs::path& dest);

}  // namespace lab::images
