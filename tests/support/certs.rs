//! Test certificates made with openssl (installed by scripts/test.sh): a CA and a server
//! certificate it signed, for the TLS listeners and the PostgreSQL server of the tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// PEM files of a test CA and a server certificate it signed for `localhost` and `127.0.0.1`.
pub struct Certificates {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// Makes [`Certificates`] in `dir` with openssl (installed by scripts/test.sh). rustls refuses
/// a self-signed CA as the server's own certificate, hence the two steps.
pub fn test_certificates(dir: &Path) -> Certificates {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (ca, ca_key, cert, key) = (p("ca.pem"), p("ca.key"), p("cert.pem"), p("key.pem"));
    let (csr, ext) = (p("server.csr"), p("server.ext"));
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: Vec<Vec<&str>> = vec![
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=datagate test CA"],
            &["-keyout", &ca_key, "-out", &ca],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .current_dir(dir)
            .output()
            .expect("openssl makes the test certificates");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Certificates { ca, cert, key }
}
