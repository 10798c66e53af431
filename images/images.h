// A lab's images: which cache entry each image of a lab file is (its key), and making the
// missing ones (imports here, Debian builds through images/debian.h), parents before children,
// each under its key's lock so that two labs needing one image make it once.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "images/cache.h"
#include "schema/lab.h"

namespace lab::images {

/// One image of a lab as the cache knows it.
struct Resolved {
  std::string name;                 // in the lab file
  std::string kind;                 // schema::ToString(ImageKind)
  std::string key;                  // "" when it cannot be known without building (debian: never resolved)
  bool cached = false;              // its entry is in the cache
  std::vector<fs::path> layers;     // overlay lower dirs, topmost first (when cached)
  std::string source;               // "rootfs ./busybox.tar.gz", "debian bookworm (minbase) + 3 packages"
};

struct EnsureOptions {
  bool make = true;                 // false: only look (lab plan): nothing is imported or built
  bool refresh = false;             // resolve debian:/from: packages again (lab image update, --refresh-images)
  std::function<void(const std::string& line)> progress;  // "image 'web': importing ./web.tar", may be empty
};

/// The images the lab's machines use (and their from: parents), by name. With options.make,
/// every missing one is made first; an error names the image. Without it, a missing image is
/// reported with cached = false (and key "" when a Debian resolution would be needed).
/// Images no machine uses are left alone.
Result<std::map<std::string, Resolved>> EnsureImages(const schema::Lab& lab, Cache& cache, const EnsureOptions& options);

/// Makes one image (and its parents) whatever machines use; for `lab image build`.
Result<Resolved> EnsureImage(const schema::Lab& lab, const std::string& image, Cache& cache,
                             const EnsureOptions& options);

}  // namespace lab::images
