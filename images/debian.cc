// Placeholder of the Debian builder (images/debian.h): the builder replaces this file.
#include "images/debian.h"

namespace lab::images {

Result<std::string> ResolveDebian(const schema::Image& spec, const std::vector<std::filesystem::path>&,
                                  const std::string&, const BuildProgress&) {
  return Status::Error("image '" + spec.name + "': debian images are not built yet by this version of lab; "
                       "import one instead (rootfs:, oci: or docker_archive:)");
}

Status BuildDebian(const schema::Image& spec, const std::vector<std::filesystem::path>&, const std::filesystem::path&,
                   const std::string&, const BuildProgress&) {
  return Status::Error("image '" + spec.name + "': debian images are not built yet by this version of lab; "
                       "import one instead (rootfs:, oci: or docker_archive:)");
}

}  // namespace lab::images
