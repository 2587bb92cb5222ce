//! `quern certs`: a small certificate authority and certificates for a test cluster.
//!
//! `quern certs init` writes, into one directory:
//! - `ca.pem`, `ca.key`: the cluster's CA (keep the key off the cluster's machines);
//! - `coordinator.pem`, `coordinator.key`: the coordinator's server certificate;
//! - `worker.pem`, `worker.key`: the workers' certificate, for their shuffle ports and, with
//!   mutual TLS, as their identity towards the coordinator (organizational unit `worker`);
//! - `admin.pem`, `admin.key`: a client certificate of role `admin` for the CLI;
//! - one pair per `--client NAME=ROLE`.
//!
//! Server certificates name `localhost`, `127.0.0.1`, `::1` and every `--host`. A client
//! certificate's role is its subject's organizational unit, which a coordinator under mutual
//! TLS reads as the caller's role when the call carries no token.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use protocol::auth::Role;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Where `quern local --tls` keeps its certificates, inside its state directory.
pub const LOCAL_TLS_DIR: &str = "tls";

/// Certificate commands.
#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create a CA and certificates for a coordinator, its workers and an admin client.
    Init {
        /// Directory to write them into (made if missing).
        #[arg(long, default_value = ".quern/tls")]
        dir: PathBuf,
        /// Host names or IP addresses the coordinator and workers are reached by, besides
        /// localhost, 127.0.0.1 and ::1 (repeat, or comma-separate).
        #[arg(long = "host", value_delimiter = ',')]
        hosts: Vec<String>,
        /// More client certificates, as NAME=ROLE (role: admin, submit, read or worker).
        #[arg(long = "client", value_delimiter = ',')]
        clients: Vec<String>,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace certificates already in the directory (a new CA: every old one stops
        /// being trusted).
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `quern certs` command.
///
/// # Errors
/// A bad name, role or host, or a directory that cannot be written.
pub fn run(cmd: CertsCommand) -> Result<u8> {
    match cmd {
        CertsCommand::Init {
            dir,
            hosts,
            clients,
            days,
            force,
        } => {
            let clients = clients
                .iter()
                .map(|c| parse_client(c))
                .collect::<Result<Vec<_>>>()?;
            if !force && dir.join("ca.pem").exists() {
                bail!(
                    "{} already holds a CA; pass --force to replace it and every certificate it signed",
                    dir.display()
                );
            }
            let written = init(&dir, &hosts, &clients, days)?;
            for f in written {
                println!("{}", f.display());
            }
            Ok(0)
        }
    }
}

fn parse_client(s: &str) -> Result<(String, Role)> {
    let Some((name, role)) = s.split_once('=') else {
        bail!("--client {s:?}: expected NAME=ROLE");
    };
    protocol::check_name("client", name)?;
    let Some(role) = Role::parse(role) else {
        bail!("--client {s:?}: unknown role {role:?} (admin, submit, read or worker)");
    };
    Ok((name.to_string(), role))
}

/// The names a server certificate is valid for: the loopback names and `hosts`.
fn server_names(hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for h in hosts {
        let h = h.trim();
        if !h.is_empty() && !names.iter().any(|n| n == h) {
            names.push(h.to_string());
        }
    }
    names
}

/// A leaf certificate's parameters: common name `cn`, its role (if any) in the
/// organizational unit, and for a server the names it is valid for.
fn leaf_params(
    cn: String,
    role: Option<Role>,
    server_names: Option<&[String]>,
) -> Result<CertificateParams> {
    let mut p = match server_names {
        Some(names) => CertificateParams::new(names.to_vec())
            .with_context(|| format!("a host in {names:?} is no DNS name or IP address"))?,
        None => CertificateParams::new(Vec::<String>::new())?,
    };
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(r) = role {
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, r.to_string());
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = if server_names.is_some() {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// Makes a CA and the certificates in `dir`; returns the files written.
///
/// # Errors
/// A host that is no DNS name or IP address, or a file that cannot be written.
pub fn init(
    dir: &Path,
    hosts: &[String],
    clients: &[(String, Role)],
    days: u32,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    let validity = |p: &mut CertificateParams| {
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(i64::from(days.max(1)));
    };
    let mut written = Vec::new();
    let mut save = |name: &str, cert: &rcgen::Certificate, key: &KeyPair| -> Result<()> {
        let pem = dir.join(format!("{name}.pem"));
        let key_file = dir.join(format!("{name}.key"));
        crate::util::write_atomic(&pem, cert.pem().as_bytes())?;
        crate::util::write_private(&key_file, key.serialize_pem().as_bytes())?;
        written.push(pem);
        written.push(key_file);
        Ok(())
    };

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Quern cluster CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca);
    let ca_cert = ca.self_signed(&ca_key)?;
    save("ca", &ca_cert, &ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let names = server_names(hosts);
    // (file name, common name, role in the OU, server certificate?)
    let mut leaves: Vec<(String, String, Option<Role>, bool)> = vec![
        ("coordinator".into(), "quern coordinator".into(), None, true),
        (
            "worker".into(),
            "quern worker".into(),
            Some(Role::Worker),
            true,
        ),
        (
            "admin".into(),
            "quern admin".into(),
            Some(Role::Admin),
            false,
        ),
    ];
    for (name, role) in clients {
        if leaves.iter().any(|l| &l.0 == name) || name == "ca" {
            bail!("--client {name:?}: that name is taken");
        }
        leaves.push((name.clone(), format!("quern {name}"), Some(*role), false));
    }
    for (file, cn, role, server) in leaves {
        let key = KeyPair::generate()?;
        let mut p = leaf_params(cn, role, server.then_some(&names[..]))?;
        validity(&mut p);
        let cert = p.signed_by(&key, &issuer)?;
        save(&file, &cert, &key)?;
    }
    Ok(written)
}
