// The Debian builder: images made from Debian's packages with mmdebstrap (`debian:` images)
// and the layers `from:` images add over their parent (packages, files, run).
//
// The interface the image cache drives (images/images.cc); the builder itself lives in
// debian.cc. A build writes only into its staging dir: `staging/rootfs/` for a debian: image,
// `staging/layer/` (an overlay upper dir over `parent_layers`) for a from: image; the cache
// renames the staging dir into place once the build succeeded.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "schema/lab.h"

namespace lab::images {

/// Changes whenever the builder's output for the same inputs changes: part of every key.
inline constexpr const char* kDebianBuilderVersion = "debian-1";

/// Where a build reports to: one line per step ("resolving", "downloading 121 packages",
/// "unpacking", "configuring", "running step 2/3"), and the log file the build's output goes to.
struct BuildProgress {
  std::function<void(const std::string& step)> step;  // may be empty
  std::filesystem::path log;                           // the build log (appended to)
  /// STATE/images: where the builder keeps apt's package lists per set of sources (debian/apt/)
  /// and the .deb cache every build shares (debian/debs/). "" = next to the staging dir
  /// (staging is STATE/images/tmp/...) for a build, a private temporary dir for a resolve.
  std::filesystem::path cache_root;
};

/// The exact inputs apt would install for `spec` (a debian: image, or a from: image over
/// `parent_layers`, topmost first): the sorted `package=version` lines, one per line, plus
/// DigestFiles. Asks the mirror (apt-get -s); called only when no pin is cached or on
/// `lab image update`. An unknown package is an error naming the package, the image and the
/// line of the package in `lab_file` ("FILE:LINE:COL: ...").
Result<std::string> ResolveDebian(const schema::Image& spec, const std::vector<std::filesystem::path>& parent_layers,
                                  const std::string& lab_file, const BuildProgress& progress);

/// Builds `spec` into `staging` (staging/rootfs for debian:, staging/layer for from:, over
/// `parent_layers`, topmost first). `lab_file` locates files: sources. On error, whatever is
/// in `staging` is thrown away by the caller.
Status BuildDebian(const schema::Image& spec, const std::vector<std::filesystem::path>& parent_layers,
                   const std::filesystem::path& staging, const std::string& lab_file, const BuildProgress& progress);

}  // namespace lab::images
