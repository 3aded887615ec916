//! TLS against a local server configured in the test: a throwaway CA signs a certificate for
//! "localhost"; pg_hba.conf accepts TCP connections only over TLS (`hostssl`).

use std::path::Path;
use std::process::Command;

use crate::util::{newest_bindir, run_ok, Cluster};

fn openssl(dir: &Path, args: &[&str]) {
    run_ok(Command::new("openssl").current_dir(dir).args(args));
}

/// A CA (`name.crt`, `name.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// A server that takes TCP connections only over TLS, with a certificate for "localhost"
/// signed by `ca.crt` (another CA, `other_ca.crt`, signs nothing), and a database `db`.
fn tls_only_server() -> (Cluster, tempfile::TempDir) {
    let cluster = Cluster::start_in(&newest_bindir());
    cluster.create_db("db");
    cluster.psql(
        "db",
        "CREATE TABLE t AS SELECT generate_series(1, 100) AS i",
    );
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    make_ca(dir, "ca");
    make_ca(dir, "other_ca");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
    cluster.enable_tls_only(&dir.join("server.crt"), &dir.join("server.key"));

    (cluster, certs)
}

/// `pgarc dump -q` of `conninfo` into `out`: its exit code and stderr.
fn dump_quietly(cluster: &Cluster, out: &Path, conninfo: &str) -> (Option<i32>, String) {
    let out = cluster
        .pgarc_dump_cmd(conninfo, out)
        .arg("-q")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The server's database `db` by host name "localhost" (the certificate's name) at
/// 127.0.0.1, with no sslmode yet.
fn base_conninfo(cluster: &Cluster) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=db",
        cluster.port
    )
}

/// require, verify-ca, verify-full (right CA and host name), prefer and allow connect; the
/// session really is encrypted; restore connects over TLS too.
#[test]
fn sslmodes_that_can_connect_do_and_are_encrypted() {
    let (cluster, certs) = tls_only_server();
    let dir = certs.path();
    let ca = dir.join("ca.crt");
    let work = tempfile::tempdir().unwrap();
    let dump =
        |name: &str, conninfo: String| dump_quietly(&cluster, &work.path().join(name), &conninfo);
    let base = base_conninfo(&cluster);
    // require: encrypted, no verification; verify-full with the right CA and host name.
    for (name, opts) in [
        ("require", "sslmode=require".to_string()),
        (
            "verify-full",
            format!("sslmode=verify-full sslrootcert={}", ca.display()),
        ),
        (
            "verify-ca",
            format!("sslmode=verify-ca sslrootcert={}", ca.display()),
        ),
        ("prefer", "sslmode=prefer".to_string()),
    ] {
        let (code, stderr) = dump(name, format!("{base} {opts}"));
        assert_eq!(code, Some(0), "{name}: {stderr}");
        assert!(work.path().join(name).join("manifest.toml").exists());
    }
    // The session really is encrypted: pg_stat_ssl sees it while the holder is open.
    let conninfo = format!("{base} sslmode=require application_name=probe");
    let out = run_ok(Command::new(cluster.bindir.join("psql")).args([
        "-X",
        "-A",
        "-t",
        "-d",
        &conninfo,
        "-c",
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");

    // allow: tries without TLS, is refused, then connects with it.
    let (code, stderr) = dump("allow", format!("{base} sslmode=allow"));
    assert_eq!(code, Some(0), "{stderr}");
    // restore over TLS too.
    cluster.create_db("dst");
    run_ok(
        cluster
            .pgarc()
            .args(["restore", "-q", "-d"])
            .arg(format!(
                "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=dst \
                 sslmode=verify-full sslrootcert={}",
                cluster.port,
                ca.display()
            ))
            .arg(work.path().join("verify-full")),
    );
    assert_eq!(cluster.psql("dst", "SELECT count(*) FROM t").trim(), "100");
}

/// Each way TLS can fail (wrong host name, wrong CA, no root certificate, disable against a
/// TLS-only server, prefer whose handshake fails) is one line naming the problem and the fix.
#[test]
fn sslmodes_that_cannot_connect_fail_clearly() {
    let (cluster, certs) = tls_only_server();
    let dir = certs.path();
    let ca = dir.join("ca.crt");
    let other = dir.join("other_ca.crt");
    let work = tempfile::tempdir().unwrap();
    let dump =
        |name: &str, conninfo: String| dump_quietly(&cluster, &work.path().join(name), &conninfo);
    let base = base_conninfo(&cluster);
    // verify-full and a host name the certificate does not hold.
    let wrong_host = format!(
        "host=127.0.0.1 port={} user=postgres dbname=db sslmode=verify-full sslrootcert={}",
        cluster.port,
        ca.display()
    );
    let (code, stderr) = dump("wrong-host", wrong_host);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("does not name host \"127.0.0.1\""),
        "{stderr}"
    );
    // verify-full and the wrong CA.
    let (code, stderr) = dump(
        "wrong-ca",
        format!("{base} sslmode=verify-full sslrootcert={}", other.display()),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("not signed by the root certificate"),
        "{stderr}"
    );
    // verify-full without any root certificate.
    let (code, stderr) = dump(
        "no-ca",
        format!(
            "{base} sslmode=verify-full sslrootcert={}",
            dir.join("missing.crt").display()
        ),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    // disable against a hostssl-only server.
    let (code, stderr) = dump("disable", format!("{base} sslmode=disable"));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("only over TLS"), "{stderr}");
    assert!(stderr.contains("sslmode=require"), "{stderr}");
    // prefer with a root certificate (~/.postgresql/root.crt) that does not verify the
    // server: as libpq, the failed handshake is retried without TLS, which this server
    // refuses.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    std::fs::copy(&other, home.path().join(".postgresql/root.crt")).unwrap();
    let out = cluster
        .pgarc_dump_cmd(
            &format!("{base} sslmode=prefer"),
            &work.path().join("prefer-fallback"),
        )
        .env("HOME", home.path())
        .arg("-q")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no encryption"), "{stderr}");
}
