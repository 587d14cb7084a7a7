//! Certificates and keys for the control plane, made with the `openssl`
//! CLI: a cluster CA, the API server's serving cert (SANs for every address
//! clients dial), client certs for the admin, controller-manager and
//! scheduler, and the service-account signing key pair. Also renders
//! kubeconfigs.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys::run;
use crate::topology::{CONTROL_PLANE_IP, KUBERNETES_SERVICE_IP};

/// Paths of the generated material.
#[derive(Debug, Clone)]
pub struct Pki {
    /// Directory holding everything.
    pub dir: PathBuf,
}

/// A client identity: common name and organisation (group).
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// File stem.
    pub file: &'static str,
    /// User name.
    pub cn: &'static str,
    /// Group.
    pub org: Option<&'static str>,
}

/// The client identities the lab issues.
pub const IDENTITIES: [Identity; 3] = [
    Identity {
        file: "admin",
        cn: "kubernetes-admin",
        org: Some("system:masters"),
    },
    Identity {
        file: "controller-manager",
        cn: "system:kube-controller-manager",
        org: None,
    },
    Identity {
        file: "scheduler",
        cn: "system:kube-scheduler",
        org: None,
    },
];

impl Pki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let p = |n: &str| dir.join(n).display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        let (ca_key, ca_crt) = (p("ca.key"), p("ca.crt"));
        ca.extend([
            "-keyout",
            &ca_key,
            "-out",
            &ca_crt,
            "-days",
            "3650",
            "-subj",
            "/CN=switchyard-lab-ca",
        ]);
        run("openssl", &ca)?;

        let sans = format!(
            "subjectAltName=IP:{CONTROL_PLANE_IP},IP:127.0.0.1,IP:{KUBERNETES_SERVICE_IP},DNS:localhost,\
             DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,\
             DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n"
        );
        issue(dir, "apiserver", "/CN=kube-apiserver", &sans)?;
        for id in IDENTITIES {
            let subj = match id.org {
                Some(o) => format!("/O={o}/CN={}", id.cn),
                None => format!("/CN={}", id.cn),
            };
            issue(dir, id.file, &subj, "extendedKeyUsage=clientAuth\n")?;
        }
        let (sa_key, sa_pub) = (p("sa.key"), p("sa.pub"));
        run(
            "openssl",
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &sa_key,
            ],
        )?;
        run(
            "openssl",
            &["ec", "-in", &sa_key, "-pubout", "-out", &sa_pub],
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// A file in the PKI directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The CA certificate in PEM.
    pub fn ca_pem(&self) -> Result<String> {
        let p = self.path("ca.crt");
        std::fs::read_to_string(&p).map_err(Error::io("reading", p))
    }

    /// Writes a kubeconfig for `identity` pointing at `server`.
    pub fn write_kubeconfig(&self, identity: &str, server: &str, out: &Path) -> Result<()> {
        let text = kubeconfig(
            server,
            &self.path("ca.crt"),
            &self.path(&format!("{identity}.crt")),
            &self.path(&format!("{identity}.key")),
        );
        std::fs::write(out, text).map_err(Error::io("writing", out))
    }
}

fn issue(dir: &Path, name: &str, subj: &str, ext: &str) -> Result<()> {
    let p = |n: String| dir.join(n).display().to_string();
    let (key, csr, crt, extf) = (
        p(format!("{name}.key")),
        p(format!("{name}.csr")),
        p(format!("{name}.crt")),
        p(format!("{name}.ext")),
    );
    std::fs::write(&extf, ext).map_err(Error::io("writing", &extf))?;
    run(
        "openssl",
        &[
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
            subj,
        ],
    )?;
    let (ca_crt, ca_key) = (p("ca.crt".into()), p("ca.key".into()));
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "3650",
            "-extfile",
            &extf,
        ],
    )?;
    Ok(())
}

/// Renders a client-certificate kubeconfig (pure).
pub fn kubeconfig(server: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: switchyard-lab\n  cluster:\n    server: {server}\n    \
         certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    client-certificate: {cert}\n    \
         client-key: {key}\ncontexts:\n- name: switchyard-lab\n  context:\n    cluster: switchyard-lab\n    \
         user: user\ncurrent-context: switchyard-lab\n",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_parses_and_names_the_server() {
        let text = kubeconfig(
            "https://127.0.0.1:1234",
            Path::new("/c"),
            Path::new("/a"),
            Path::new("/k"),
        );
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:1234")
        );
        assert_eq!(v["users"][0]["user"]["client-key"].as_str(), Some("/k"));
        assert_eq!(v["current-context"].as_str(), Some("switchyard-lab"));
    }
}
