// For tests only: a throwaway certificate authority and certificates signed
// by it, made with the openssl command line (P-256 keys, valid two days).
//
//   TestCa ca(FreshTestDir("tls"));
//   TestCert a = ca.Issue("a.test", {"DNS:a.test", "IP:127.0.0.1"});
//   // ca.ca_file(), a.cert_file, a.key_file
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace capstan::net::testing {

struct TestCert {
  std::string cert_file, key_file;
};

class TestCa {
 public:
  explicit TestCa(std::filesystem::path dir) : dir_(std::move(dir)) {
    std::filesystem::create_directories(dir_);
    Run(absl::StrCat("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
                     " -keyout ", Path("ca.key"), " -out ", Path("ca.pem"),
                     " -days 2 -subj '/CN=Capstan Test CA'"));
  }
  ~TestCa() { std::filesystem::remove_all(dir_); }

  std::string ca_file() const { return Path("ca.pem"); }
  const std::filesystem::path& dir() const { return dir_; }

  // A certificate for `common_name` with the subjectAltNames given
  // ("DNS:x", "IP:127.0.0.1"); `name` names its files.
  TestCert Issue(const std::string& common_name, const std::vector<std::string>& alt_names,
                 const std::string& name = "") {
    std::string base = name.empty() ? common_name : name;
    for (char& c : base) {
      if (c == '*') c = '_';
    }
    TestCert cert{Path(base + ".pem"), Path(base + ".key")};
    std::string ext = Path(base + ".ext");
    std::ofstream(ext) << "subjectAltName=" << absl::StrJoin(alt_names, ",") << "\n";
    Run(absl::StrCat("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes",
                     " -keyout ", cert.key_file, " -out ", Path(base + ".csr"),
                     " -subj '/CN=", common_name, "'"));
    Run(absl::StrCat("openssl x509 -req -in ", Path(base + ".csr"), " -CA ", ca_file(), " -CAkey ",
                     Path("ca.key"), " -CAcreateserial -days 2 -extfile ", ext, " -out ",
                     cert.cert_file));
    return cert;
  }

 private:
  std::string Path(const std::string& file) const { return (dir_ / file).string(); }
  static void Run(const std::string& command) {
    int rc = std::system((command + " >/dev/null 2>&1").c_str());
    EXPECT_EQ(rc, 0) << command;
  }
  std::filesystem::path dir_;
};

}  // namespace capstan::net::testing
