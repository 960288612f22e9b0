//! Certificates for the TLS tests, made with `openssl` in a temporary
//! directory: a CA (`ca.pem`, `ca.key`), a server certificate for 127.0.0.1
//! and localhost (`server.*`) and a client certificate for `sspr.internal`
//! (`client.*`). Tests can make more CAs and certificates, e.g. to rotate.

use std::{path::PathBuf, process::Command};

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate for `sspr.internal`, all in a temporary directory.
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let pki = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        pki.ca("ca");
        pki.issue("ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost");
        pki.issue("ca", "client", "subjectAltName=DNS:sspr.internal");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("pem")
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run openssl: {e}; the TLS tests need it: apt-get install -y openssl (./scripts/test does)")
            });
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn ca(&self, name: &str) {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN=verifyd test {name}"),
        ]);
    }

    /// `name.pem` and `name.key`, signed by `ca`.
    pub fn issue(&self, ca: &str, name: &str, san: &str) {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(self.path(&ext), format!("{san}\n")).expect("ext");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}
