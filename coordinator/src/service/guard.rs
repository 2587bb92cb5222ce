//! Authorization of every coordinator RPC in one place: a tower service around the generated
//! gRPC server that looks up the role a method needs in [`ROLES`] and checks the caller's
//! token (or, under mutual TLS, its client certificate) before any handler runs. With
//! authentication on, a method missing from the table is refused, so a new RPC cannot go
//! unchecked; handlers hold no authorization code.

use std::convert::Infallible;
use std::sync::Arc;

use protocol::auth::{Authenticator, Denied, Role};
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

/// The role each RPC of `quern.v1.CoordinatorService` needs, and what it does in words (for
/// refusals: "the read role may not submit job").
pub const ROLES: &[(&str, Role, &str)] = &[
    ("RegisterWorker", Role::Worker, "register worker"),
    ("Heartbeat", Role::Worker, "heartbeat"),
    ("ReportTask", Role::Worker, "report task"),
    ("ReportFetchFailure", Role::Worker, "report fetch failure"),
    ("FetchBinary", Role::Worker, "fetch binary"),
    ("SubmitJob", Role::Submit, "submit job"),
    ("KillJob", Role::Submit, "kill job"),
    ("AddSchedule", Role::Submit, "add schedule"),
    ("SetSchedule", Role::Submit, "set schedule"),
    ("StartBackfill", Role::Submit, "start backfill"),
    ("CancelBackfill", Role::Submit, "cancel backfill"),
    ("HasBinary", Role::Submit, "has binary"),
    ("UploadBinary", Role::Submit, "upload binary"),
    ("GetJob", Role::Read, "get job"),
    ("ListJobs", Role::Read, "list jobs"),
    ("ListSchedules", Role::Read, "list schedules"),
    ("ScheduleHistory", Role::Read, "schedule history"),
    ("ListBackfills", Role::Read, "list backfills"),
    ("ListAttempts", Role::Read, "list attempts"),
];

/// Who may call what: the token file and whether client certificates name roles.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// The token file every call is checked against; none: tokens are not checked.
    pub auth: Option<Arc<Authenticator>>,
    /// Whether a call without a token is identified by its client certificate's role.
    pub cert_roles: bool,
}

impl Policy {
    fn is_open(&self) -> bool {
        self.auth.is_none() && !self.cert_roles
    }

    /// Checks a call to `method` (the last segment of its path) from a caller sending
    /// `header` (the `authorization` value) over a connection that presented `certs`.
    ///
    /// # Errors
    /// The refusal, as the status the caller gets.
    #[allow(clippy::result_large_err)]
    pub fn check(
        &self,
        method: &str,
        header: Option<&str>,
        certs: Option<&[tonic::transport::CertificateDer<'static>]>,
    ) -> Result<(), Status> {
        if self.is_open() {
            return Ok(());
        }
        let Some(&(_, need, what)) = ROLES.iter().find(|(m, _, _)| *m == method) else {
            return Err(Status::permission_denied(format!(
                "{method} is in no role's table: the coordinator refuses it"
            )));
        };
        let to_status = |d: Denied| match d {
            Denied::Role { .. } => Status::permission_denied(d.to_string()),
            _ => Status::unauthenticated(d.to_string()),
        };
        // Under mutual TLS a caller is who its certificate says, unless it sends a token and
        // tokens are checked.
        if self.cert_roles && (header.is_none() || self.auth.is_none()) {
            return match certs.and_then(|c| c.first()).and_then(super::cert_role) {
                Some(role) if role.allows(need) => Ok(()),
                Some(role) => Err(to_status(Denied::Role {
                    role,
                    what: what.to_string(),
                })),
                None => Err(Status::unauthenticated(
                    "the client certificate names no role (organizational unit admin, submit, read or worker) and no token was sent",
                )),
            };
        }
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        auth.check(header, need, what)
            .map(|_| ())
            .map_err(to_status)
    }
}

/// A gRPC service whose every call passes [`Policy::check`] first.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S> Guarded<S> {
    /// Guards `inner` with `policy`.
    pub fn new(inner: S, policy: Policy) -> Self {
        Guarded {
            inner,
            policy: Arc::new(policy),
        }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default();
        let header = req
            .headers()
            .get(protocol::auth::HEADER)
            .and_then(|v| v.to_str().ok());
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs());
        match self
            .policy
            .check(method, header, certs.as_deref().map(|c| &c[..]))
        {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_of_the_service_has_a_role() {
        let proto = include_str!("../../../protocol/proto/quern/v1/coordinator.proto");
        let rpcs: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc ")?.split('(').next())
            .collect();
        assert!(rpcs.len() >= 19, "{rpcs:?}");
        for rpc in &rpcs {
            assert!(
                ROLES.iter().any(|(m, _, _)| m == rpc),
                "{rpc} has no role in ROLES"
            );
        }
        assert_eq!(
            rpcs.len(),
            ROLES.len(),
            "ROLES names an RPC that does not exist"
        );
    }

    #[test]
    fn with_authentication_on_an_unlisted_method_is_refused() {
        let policy = Policy {
            auth: None,
            cert_roles: true,
        };
        let e = policy.check("DropEverything", None, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(Policy::default()
            .check("DropEverything", None, None)
            .is_ok());
    }
}
