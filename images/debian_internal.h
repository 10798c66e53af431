// Pieces of the Debian builder (debian.cc) that are pure and so tested without a mirror: the
// apt sources an image is built from, what `apt-get -s` says, and mmdebstrap's command line.
// Not an API for other layers.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "schema/lab.h"

namespace lab::images::debian {

/// Debian's architecture name of this build of lab ("amd64", "arm64").
const char* NativeArch();

/// The `deb ...` lines an image is built from. With `mirror:` only `deb MIRROR SUITE main`
/// (a snapshot mirror then pins every byte); without it, mmdebstrap's own default for a released
/// suite: deb.debian.org's SUITE and SUITE-updates plus security.debian.org's SUITE-security
/// (sid/unstable/experimental/testing/rc-buggy: the suite alone). The resolver and the build use
/// the same lines, so what apt resolved is what mmdebstrap installs.
std::vector<std::string> SourceLines(const std::string& suite, const std::string& mirror);

/// What `apt-get -s install ...` printed, read.
struct Simulation {
  std::vector<std::string> installs;  // "name=version" of every `Inst` line, sorted
  std::vector<std::string> unknown;   // packages apt could not find or has no candidate for
  std::string other_errors;           // the `E:` lines that are about something else
};
Simulation ParseSimulation(std::string_view apt_output);

/// The unknown packages of `spec` as FILE:LINE:COL diagnostics, one line each, naming the
/// package, the image and the suite, with the closest of `known` (the archive's package names)
/// as a "did you mean": what a build reports instead of building.
std::string UnknownPackagesError(const schema::Image& spec, const std::string& lab_file,
                                 const std::vector<std::string>& unknown, const std::vector<std::string>& known);

/// `s` as one word for /bin/sh: single quotes, a `'` written as '\''.
std::string ShellQuote(std::string_view s);

/// The dpkg options of `slim: true`: no docs (copyright files kept), man pages or locales.
std::vector<std::string> SlimDpkgOptions();

/// Everything mmdebstrap needs for one debian: image.
struct MmdebstrapPlan {
  std::string target;                 // the rootfs dir to make (must not exist)
  std::string lists;                  // a dir holding apt's lists for `sources` (apt-get update skipped)
  std::string debs;                   // the shared .deb cache: linked in before, linked back after
  std::string lab_dir;                // where files: sources are, relative to the lab file
};
/// mmdebstrap's argv (argv[0] = "mmdebstrap") for `spec` from `sources`: --mode=root, the
/// variant, the packages, slim, files: and run: as customize hooks (each run step announced by a
/// "lab: step I/N: CMD" line), the .deb cache sync, and host traces (resolv.conf, hostname)
/// blanked at the end so the tree does not depend on the machine that built it.
std::vector<std::string> MmdebstrapArgv(const schema::Image& spec, const std::vector<std::string>& sources,
                                        const MmdebstrapPlan& plan);

/// A fixed SOURCE_DATE_EPOCH: the key names every input, so the time is not one of them.
inline constexpr const char* kSourceDateEpoch = "1686355200";  // 2023-06-10, bookworm's release

}  // namespace lab::images::debian
