//! THE route table: one row per operation kps serves (methods, path template, metrics label, who may call
//! it, its policy action, whether its body is JSON, and its handler). Everything the edge says about
//! routes is derived from these rows: path matching (404), the methods of a path (405 and `Allow`), the
//! metrics labels, the listener an operation lives on, the policy action a handler enforces, and the
//! OpenAPI check (tests compare `openapi.json` with this table).
//!
//! Adding an endpoint is one row here plus one handler `async fn(&AppState, &Call) -> Result<Response,
//! ApiError>` in its API module. This file touches no service and no request: it only names handlers.

use std::future::Future;
use std::pin::Pin;

use axum::http::{Method, StatusCode};
use axum::response::Response;

use super::error::ApiError;
use super::pipeline::Call;
use super::policy::Action;
use super::{AppState, admin, nova, operations, v3, versions};

/// The future a handler returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Response, ApiError>> + Send + 'a>>;

/// A handler: what an operation does once the pipeline's checks (errors.md §4 steps 1–6) have passed.
pub type Handler = for<'a> fn(&'a AppState, &'a Call<'a>) -> HandlerFuture<'a>;

/// `handler!(module::function)`: an `async fn(&AppState, &Call<'_>) -> Result<Response, ApiError>` as a
/// table entry.
macro_rules! handler {
    ($function:path) => {{
        fn boxed<'a>(state: &'a AppState, call: &'a Call<'a>) -> HandlerFuture<'a> {
            Box::pin($function(state, call))
        }
        Endpoint::Handler(boxed)
    }};
}

/// What answers an operation.
#[derive(Clone, Copy)]
pub enum Endpoint {
    Handler(Handler),
    /// A KPS V3 operation that needs servers: 501 KPS.1014 at the routing step, named by its SDK method.
    NeedsServers(&'static str),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Handler(_) => f.write_str("Handler"),
            Self::NeedsServers(operation) => f.debug_tuple("NeedsServers").field(operation).finish(),
        }
    }
}

/// Who may call an operation, and on which listener it is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, on `listen` (the version documents).
    Public,
    /// Anyone, on `admin_listen` when that is set, else on `listen`: `/healthz`, `/readyz`, `/metrics`,
    /// `/openapi.json`.
    Operations,
    /// An authenticated caller, on `listen` (the Nova and V3 APIs).
    Caller,
    /// An authenticated caller, on `admin_listen` when that is set (the admin API `/admin/v1/*`), so that a
    /// tenant-facing listener cannot reach backup or rewrap (interface.md).
    Admin,
}

impl Access {
    pub fn needs_auth(self) -> bool {
        matches!(self, Self::Caller | Self::Admin)
    }

    pub fn is_operations_endpoint(self) -> bool {
        matches!(self, Self::Operations | Self::Admin)
    }
}

/// One operation kps serves: its methods (`HEAD` included wherever `GET` is), its path template
/// (`{project_id}`, `{keypair_name}`, `{task_id}` stand for one non-empty path segment each; a name is
/// percent-decoded, a project id is at most 255 bytes), its metrics label (one per template), who may call
/// it, the policy action its handler enforces, whether a body is parsed as JSON, and what answers it.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    pub methods: &'static [Method],
    pub template: &'static str,
    pub label: &'static str,
    pub access: Access,
    pub action: Option<Action>,
    /// The body is parsed as JSON before the handler runs (errors.md §4 step 5).
    pub json_body: bool,
    pub endpoint: Endpoint,
}

impl RouteSpec {
    /// `/v2.1` routes negotiate a microversion (errors.md §4 step 4).
    pub fn negotiates_microversion(&self) -> bool {
        self.template == "/v2.1" || self.template.starts_with("/v2.1/")
    }
}

/// A row being written: methods, template and label; `.json()` and the access method finish it.
#[derive(Clone, Copy)]
struct Row {
    methods: &'static [Method],
    template: &'static str,
    label: &'static str,
    json_body: bool,
}

const fn row(methods: &'static [Method], template: &'static str, label: &'static str) -> Row {
    Row { methods, template, label, json_body: false }
}

impl Row {
    const fn json(self) -> Self {
        Row { json_body: true, ..self }
    }

    const fn finish(self, access: Access, action: Option<Action>, endpoint: Endpoint) -> RouteSpec {
        let Row { methods, template, label, json_body } = self;
        RouteSpec { methods, template, label, access, action, json_body, endpoint }
    }

    const fn public(self, endpoint: Endpoint) -> RouteSpec {
        self.finish(Access::Public, None, endpoint)
    }

    const fn operations(self, endpoint: Endpoint) -> RouteSpec {
        self.finish(Access::Operations, None, endpoint)
    }

    const fn caller(self, action: Action, endpoint: Endpoint) -> RouteSpec {
        self.finish(Access::Caller, Some(action), endpoint)
    }

    const fn admin(self, action: Action, endpoint: Endpoint) -> RouteSpec {
        self.finish(Access::Admin, Some(action), endpoint)
    }

    const fn needs_servers(self, sdk_method: &'static str) -> RouteSpec {
        self.finish(Access::Caller, None, Endpoint::NeedsServers(sdk_method))
    }
}

const GET: &[Method] = &[Method::GET, Method::HEAD];
const POST: &[Method] = &[Method::POST];
const PUT: &[Method] = &[Method::PUT];
const DELETE: &[Method] = &[Method::DELETE];

/// The OpenAPI 3.0 document of every route in `ROUTE_TABLE` (`GET /openapi.json`); a test keeps the two
/// in step.
pub const OPENAPI_DOCUMENT: &str = include_str!("openapi.json");

/// Every operation kps serves. Row order does not matter: a literal segment beats a placeholder.
#[rustfmt::skip]
pub const ROUTE_TABLE: &[RouteSpec] = &[
    row(GET, "/", "versions").public(handler!(versions::list_versions)),
    row(GET, "/v2", "v2_document").public(handler!(versions::show_v20)),
    row(GET, "/v2/", "v2_document").public(handler!(versions::show_v20)),
    row(GET, "/v2.1", "v21_document").public(handler!(versions::show_v21)),
    row(GET, "/v2.1/", "v21_document").public(handler!(versions::show_v21)),
    row(GET, "/healthz", "healthz").operations(handler!(operations::health)),
    row(GET, "/readyz", "readyz").operations(handler!(operations::readiness)),
    row(GET, "/metrics", "metrics").operations(handler!(operations::metrics)),
    row(GET, "/openapi.json", "openapi").operations(handler!(operations::openapi)),
    // Nova os-keypairs: /v2.1 at a microversion, /v2 legacy; with and without a project segment.
    row(GET, "/v2.1/os-keypairs", "nova_keypairs").caller(Action::NovaIndex, handler!(nova::list)),
    row(POST, "/v2.1/os-keypairs", "nova_keypairs").json().caller(Action::NovaCreate, handler!(nova::create)),
    row(GET, "/v2.1/os-keypairs/{keypair_name}", "nova_keypair").caller(Action::NovaShow, handler!(nova::show)),
    row(DELETE, "/v2.1/os-keypairs/{keypair_name}", "nova_keypair").caller(Action::NovaDelete, handler!(nova::delete)),
    row(GET, "/v2.1/{project_id}/os-keypairs", "nova_keypairs").caller(Action::NovaIndex, handler!(nova::list)),
    row(POST, "/v2.1/{project_id}/os-keypairs", "nova_keypairs").json().caller(Action::NovaCreate, handler!(nova::create)),
    row(GET, "/v2.1/{project_id}/os-keypairs/{keypair_name}", "nova_keypair").caller(Action::NovaShow, handler!(nova::show)),
    row(DELETE, "/v2.1/{project_id}/os-keypairs/{keypair_name}", "nova_keypair").caller(Action::NovaDelete, handler!(nova::delete)),
    row(GET, "/v2/os-keypairs", "nova_v2_keypairs").caller(Action::NovaIndex, handler!(nova::list)),
    row(POST, "/v2/os-keypairs", "nova_v2_keypairs").json().caller(Action::NovaCreate, handler!(nova::create)),
    row(GET, "/v2/os-keypairs/{keypair_name}", "nova_v2_keypair").caller(Action::NovaShow, handler!(nova::show)),
    row(DELETE, "/v2/os-keypairs/{keypair_name}", "nova_v2_keypair").caller(Action::NovaDelete, handler!(nova::delete)),
    row(GET, "/v2/{project_id}/os-keypairs", "nova_v2_keypairs").caller(Action::NovaIndex, handler!(nova::list)),
    row(POST, "/v2/{project_id}/os-keypairs", "nova_v2_keypairs").json().caller(Action::NovaCreate, handler!(nova::create)),
    row(GET, "/v2/{project_id}/os-keypairs/{keypair_name}", "nova_v2_keypair").caller(Action::NovaShow, handler!(nova::show)),
    row(DELETE, "/v2/{project_id}/os-keypairs/{keypair_name}", "nova_v2_keypair").caller(Action::NovaDelete, handler!(nova::delete)),
    // The admin API.
    row(POST, "/admin/v1/backup", "admin_backup").admin(Action::AdminBackup, handler!(admin::backup)),
    row(POST, "/admin/v1/rewrap", "admin_rewrap").json().admin(Action::AdminRewrap, handler!(admin::rewrap)),
    // KPS V3.
    row(GET, "/v3/{project_id}/keypairs", "v3_keypairs").caller(Action::List, handler!(v3::list)),
    row(POST, "/v3/{project_id}/keypairs", "v3_keypairs").json().caller(Action::Create, handler!(v3::create)),
    row(GET, "/v3/{project_id}/keypairs/{keypair_name}", "v3_keypair").caller(Action::Show, handler!(v3::show)),
    row(PUT, "/v3/{project_id}/keypairs/{keypair_name}", "v3_keypair").json().caller(Action::Update, handler!(v3::update)),
    row(DELETE, "/v3/{project_id}/keypairs/{keypair_name}", "v3_keypair").caller(Action::Delete, handler!(v3::delete)),
    row(DELETE, "/v3/{project_id}/keypairs/{keypair_name}/private-key", "v3_keypair_private_key")
        .caller(Action::ClearPrivateKey, handler!(v3::clear_private_key)),
    row(POST, "/v3/{project_id}/keypairs/private-key/import", "v3_import_private_key")
        .json().caller(Action::ImportPrivateKey, handler!(v3::import_private_key)),
    row(POST, "/v3/{project_id}/keypairs/private-key/export", "v3_export_private_key")
        .json().caller(Action::ExportPrivateKey, handler!(v3::export_private_key)),
    row(POST, "/v3/{project_id}/keypairs/batch-import", "v3_batch_import")
        .json().caller(Action::BatchImport, handler!(v3::batch::batch_import)),
    row(POST, "/v3/{project_id}/keypairs/private-key/batch-export", "v3_batch_export")
        .json().caller(Action::BatchExport, handler!(v3::batch::batch_export)),
    // KPS V3 operations that need servers (kps-v3.md §5).
    row(POST, "/v3/{project_id}/keypairs/associate", "v3_associate").needs_servers("associate_keypair"),
    row(POST, "/v3/{project_id}/keypairs/batch-associate", "v3_batch_associate").needs_servers("batch_associate_keypair"),
    row(POST, "/v3/{project_id}/keypairs/disassociate", "v3_disassociate").needs_servers("disassociate_keypair"),
    row(GET, "/v3/{project_id}/tasks/{task_id}", "v3_task").needs_servers("list_keypair_task"),
    row(GET, "/v3/{project_id}/running-tasks", "v3_running_tasks").needs_servers("list_running_task"),
    row(GET, "/v3/{project_id}/failed-tasks", "v3_failed_tasks").needs_servers("list_failed_task"),
    row(DELETE, "/v3/{project_id}/failed-tasks", "v3_failed_tasks").needs_servers("delete_all_failed_task"),
    row(DELETE, "/v3/{project_id}/failed-tasks/{task_id}", "v3_failed_task").needs_servers("delete_failed_task"),
];

/// What a path's placeholders held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams {
    /// `{project_id}` exactly as it appeared in the URL.
    pub project: Option<String>,
    /// `{keypair_name}`, percent-decoded.
    pub name: Option<String>,
}

/// A path matched to a template of the table (whatever the method).
#[derive(Debug, Clone)]
pub struct Matched {
    /// The first row of the template; every row of a template shares its label and access (a test says so).
    first: &'static RouteSpec,
    pub params: PathParams,
}

impl Matched {
    /// The route's name in metrics: its template's label, never a path value.
    pub fn label(&self) -> &'static str {
        self.first.label
    }

    pub fn access(&self) -> Access {
        self.first.access
    }

    /// The row serving `method` on this path; `None` is a 405.
    pub fn operation(&self, method: &Method) -> Option<&'static RouteSpec> {
        self.rows().find(|spec| spec.methods.contains(method))
    }

    /// Every method this path serves, for `Allow`, in alphabetical order.
    pub fn allowed_methods(&self) -> Vec<Method> {
        let mut methods: Vec<Method> = self.rows().flat_map(|spec| spec.methods.iter().cloned()).collect();
        methods.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        methods.dedup();
        methods
    }

    fn rows(&self) -> impl Iterator<Item = &'static RouteSpec> + use<> {
        let template = self.first.template;
        ROUTE_TABLE.iter().filter(move |spec| spec.template == template)
    }
}

impl RouteSpec {
    /// KPS.1014 for an operation that needs servers.
    pub fn needs_servers(&self) -> Option<ApiError> {
        let Endpoint::NeedsServers(operation) = self.endpoint else { return None };
        Some(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "KPS.1014",
            format!("Operation {operation} needs servers and is not supported by this service"),
        ))
    }
}

/// Maps a path to its template; `None` is a 404. Where several templates match, the one whose first
/// literal segment comes earliest wins (`/v3/p/keypairs/batch-import` is not a key pair named
/// `batch-import`; `/v2.1/os-keypairs/k` is not project `os-keypairs`).
pub fn route(path: &str) -> Option<Matched> {
    // Every request routes: no allocation until the winner's parameters are taken.
    let given: Vec<&str> = path.split('/').collect();
    let mut best: Option<(u64, &'static RouteSpec, &[Segment])> = None;
    for (spec, segments) in compiled() {
        let Some(literals) = match_segments(segments, &given) else { continue };
        if best.as_ref().is_none_or(|(best_literals, _, _)| literals > *best_literals) {
            best = Some((literals, spec, segments));
        }
    }
    let (_, first, segments) = best?;
    let mut params = PathParams::default();
    for (segment, value) in segments.iter().zip(&given) {
        match segment {
            Segment::Project => params.project = Some((*value).to_owned()),
            Segment::Name => params.name = Some(decode_segment(value)),
            Segment::Literal(_) | Segment::Task => {}
        }
    }
    Some(Matched { first, params })
}

/// One segment of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Literal(&'static str),
    /// `{project_id}`: 1 to 255 bytes.
    Project,
    /// `{keypair_name}`, percent-decoded.
    Name,
    /// `{task_id}`.
    Task,
}

/// The templates of the route table, split into segments once.
fn compiled() -> &'static [(&'static RouteSpec, Vec<Segment>)] {
    static COMPILED: std::sync::LazyLock<Vec<(&'static RouteSpec, Vec<Segment>)>> = std::sync::LazyLock::new(|| {
        ROUTE_TABLE
            .iter()
            .map(|spec| {
                let segments = spec
                    .template
                    .split('/')
                    .map(|part| match part {
                        "{project_id}" => Segment::Project,
                        "{keypair_name}" => Segment::Name,
                        "{task_id}" => Segment::Task,
                        literal => Segment::Literal(literal),
                    })
                    .collect();
                (spec, segments)
            })
            .collect()
    });
    &COMPILED
}

/// Whether `given` (a path split at `/`) fits `segments`; on a match, which segments were literal, as bits
/// from the first segment down (a larger number = a literal earlier).
fn match_segments(segments: &[Segment], given: &[&str]) -> Option<u64> {
    if segments.len() != given.len() || segments.len() > 64 {
        return None;
    }
    let mut literals = 0u64;
    for (index, (segment, value)) in segments.iter().zip(given).enumerate() {
        match segment {
            Segment::Literal(literal) if literal == value => literals |= 1 << (63 - index),
            Segment::Literal(_) => return None,
            _ if value.is_empty() => return None,
            Segment::Project if value.len() > 255 => return None,
            Segment::Project | Segment::Name | Segment::Task => {}
        }
    }
    Some(literals)
}

pub fn decode_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(label, project, name)` of the route a path reaches.
    fn routed(path: &str) -> Option<(&'static str, Option<String>, Option<String>)> {
        route(path).map(|m| (m.label(), m.params.project, m.params.name))
    }

    #[test]
    fn routes_follow_the_route_table() {
        let some = |label, project: Option<&str>, name: Option<&str>| {
            Some((label, project.map(str::to_owned), name.map(str::to_owned)))
        };
        let table = [
            ("/", some("versions", None, None)),
            ("/v2", some("v2_document", None, None)),
            ("/v2/", some("v2_document", None, None)),
            ("/v2.1", some("v21_document", None, None)),
            ("/v2.1/", some("v21_document", None, None)),
            ("/healthz", some("healthz", None, None)),
            ("/readyz", some("readyz", None, None)),
            ("/v2.1/os-keypairs", some("nova_keypairs", None, None)),
            ("/v2.1/os-keypairs/k%20one", some("nova_keypair", None, Some("k one"))),
            ("/v2.1/os-keypairs/os-keypairs", some("nova_keypair", None, Some("os-keypairs"))),
            ("/v2.1/p-42/os-keypairs", some("nova_keypairs", Some("p-42"), None)),
            ("/v2.1/p-42/os-keypairs/k", some("nova_keypair", Some("p-42"), Some("k"))),
            ("/v2/p-42/os-keypairs", some("nova_v2_keypairs", Some("p-42"), None)),
            ("/v2/p-42/os-keypairs/k", some("nova_v2_keypair", Some("p-42"), Some("k"))),
            ("/v2/os-keypairs", some("nova_v2_keypairs", None, None)),
            ("/v2/os-keypairs/k%20one", some("nova_v2_keypair", None, Some("k one"))),
            ("/v2/os-keypairs/", None),
            ("/v2.1/os-keypairs/", None),
            ("/v2.1/p-42/os-keypairs/", None),
            ("/v2.1/os-keypairs/k/", None),
            ("/v2.1/p/os-keypairs/k/x", None),
            ("/v2.1//os-keypairs", None),
            ("/v3/p/keypairs", some("v3_keypairs", Some("p"), None)),
            ("/v3/p/keypairs/", None),
            ("/v3/p/keypairs/k%201", some("v3_keypair", Some("p"), Some("k 1"))),
            ("/v3/p/keypairs/private-key", some("v3_keypair", Some("p"), Some("private-key"))),
            ("/v3/p/keypairs/batch-import", some("v3_batch_import", Some("p"), None)),
            ("/v3/p/keypairs/private-key/import", some("v3_import_private_key", Some("p"), None)),
            ("/v3/p/keypairs/private-key/export", some("v3_export_private_key", Some("p"), None)),
            ("/v3/p/keypairs/private-key/batch-export", some("v3_batch_export", Some("p"), None)),
            ("/v3/p/keypairs/k/private-key", some("v3_keypair_private_key", Some("p"), Some("k"))),
            ("/v3/p/keypairs/associate", some("v3_associate", Some("p"), None)),
            ("/v3/p/failed-tasks", some("v3_failed_tasks", Some("p"), None)),
            ("/v3/p/keypairs/k/other", None),
            ("/v3/p/nothing", None),
            ("/nothing", None),
        ];
        for (path, expected) in table {
            assert_eq!(routed(path), expected, "{path}");
        }
        let long_project = format!("/v3/{}/keypairs", "p".repeat(256));
        assert_eq!(routed(&long_project), None);
    }

    /// `template` with its placeholders filled in.
    fn sample_path(template: &str) -> String {
        template.replace("{project_id}", "p-42").replace("{keypair_name}", "k").replace("{task_id}", "t-1")
    }

    #[test]
    fn every_row_is_reached_by_its_own_template_and_method() {
        for spec in ROUTE_TABLE {
            let path = sample_path(spec.template);
            let matched = route(&path).unwrap_or_else(|| panic!("{path} is not routed"));
            assert_eq!(matched.label(), spec.label, "{path}");
            for method in spec.methods {
                let served = matched.operation(method).unwrap_or_else(|| panic!("{method} {path}"));
                assert_eq!(served.template, spec.template, "{method} {path}");
            }
        }
    }

    #[test]
    fn rows_of_a_template_agree_and_methods_appear_once() {
        for spec in ROUTE_TABLE {
            let same: Vec<&RouteSpec> = ROUTE_TABLE.iter().filter(|s| s.template == spec.template).collect();
            for other in &same {
                assert_eq!((other.label, other.access), (spec.label, spec.access), "{}", spec.template);
            }
            let mut methods: Vec<&str> = same.iter().flat_map(|s| s.methods.iter().map(Method::as_str)).collect();
            let count = methods.len();
            methods.sort_unstable();
            methods.dedup();
            assert_eq!(methods.len(), count, "a method is served twice on {}", spec.template);
            if methods.contains(&"GET") {
                assert!(methods.contains(&"HEAD"), "HEAD goes with GET on {}", spec.template);
            }
        }
    }

    #[test]
    fn every_policy_action_belongs_to_a_route_and_every_authenticated_handler_has_one() {
        for action in Action::ALL {
            assert!(ROUTE_TABLE.iter().any(|spec| spec.action == Some(action)), "{} has no route", action.name());
        }
        for spec in ROUTE_TABLE {
            let handled = matches!(spec.endpoint, Endpoint::Handler(_));
            assert_eq!(
                spec.action.is_some(),
                handled && spec.access.needs_auth(),
                "{} {:?}",
                spec.template,
                spec.methods
            );
        }
    }

    #[test]
    fn allow_lists_every_method_of_the_path_in_order() {
        let allowed = |path: &str| {
            route(path).expect(path).allowed_methods().iter().map(Method::as_str).collect::<Vec<_>>().join(", ")
        };
        assert_eq!(allowed("/v2.1/os-keypairs"), "GET, HEAD, POST");
        assert_eq!(allowed("/v2.1/os-keypairs/k"), "DELETE, GET, HEAD");
        assert_eq!(allowed("/v3/p/keypairs/k"), "DELETE, GET, HEAD, PUT");
        assert_eq!(allowed("/admin/v1/backup"), "POST");
    }

    #[test]
    fn the_openapi_document_lists_the_route_table() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI_DOCUMENT).expect("openapi.json parses");
        let paths = document["paths"].as_object().expect("paths");
        for spec in ROUTE_TABLE {
            for method in spec.methods.iter().filter(|m| **m != Method::HEAD) {
                let documented = paths.get(spec.template).and_then(|item| item.get(method.as_str().to_lowercase()));
                assert!(documented.is_some(), "{method} {} is not in openapi.json", spec.template);
            }
        }
    }
}
