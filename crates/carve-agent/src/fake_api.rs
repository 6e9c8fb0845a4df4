//! An in-process Kubernetes API server for the reconcilers' tests: kube's
//! `Client` over a `tower-test` mock, answered from an in-memory object store
//! with resourceVersions, 404/409 as the real server gives them, injected
//! failures and hooks that run when a given request arrives (to change the
//! world in the middle of a reconcile). Every request is recorded.
//!
//! What it does not do: watches, selectors, server-side apply semantics (a
//! patch of any type is applied as a JSON merge patch, which is what the agent
//! sends). The agent lists and filters on its side, so selectors are not
//! needed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// One request as the agent sent it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

type Hook = Box<dyn FnOnce(&mut Store) + Send>;

/// Objects by collection (`api/v1/persistentvolumeclaims`), then by
/// (namespace, name); the namespace is "" for cluster-scoped objects.
#[derive(Default)]
pub struct Store {
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    version: u64,
}

impl Store {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// Puts an object in its collection, as a create would (with a
    /// resourceVersion and uid), replacing one of the same name.
    pub fn put(&mut self, mut obj: Value) {
        let collection = collection_of(&obj);
        let rv = self.next_version();
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        meta.insert("resourceVersion".into(), rv.clone().into());
        meta.entry("uid")
            .or_insert_with(|| format!("uid-{rv}").into());
        meta.entry("creationTimestamp")
            .or_insert_with(|| "2026-12-01T00:00:00Z".into());
        let key = key_of(&obj);
        self.objects.entry(collection).or_default().insert(key, obj);
    }

    pub fn get(&self, collection: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(collection)?
            .get(&(ns.to_string(), name.to_string()))
    }

    pub fn remove(&mut self, collection: &str, ns: &str, name: &str) -> Option<Value> {
        self.objects
            .get_mut(collection)?
            .remove(&(ns.to_string(), name.to_string()))
    }

    pub fn list(&self, collection: &str) -> Vec<Value> {
        self.objects
            .get(collection)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// The collection path of an object, from its apiVersion and kind.
fn collection_of(obj: &Value) -> String {
    let api_version = obj["apiVersion"].as_str().expect("apiVersion");
    let kind = obj["kind"].as_str().expect("kind");
    let plural = match kind {
        "StorageClass" => "storageclasses".to_string(),
        "VolumeSnapshot" => "volumesnapshots".to_string(),
        "VolumeSnapshotContent" => "volumesnapshotcontents".to_string(),
        "CSIStorageCapacity" => "csistoragecapacities".to_string(),
        k => format!("{}s", k.to_lowercase()),
    };
    let prefix = if api_version.contains('/') {
        format!("apis/{api_version}")
    } else {
        format!("api/{api_version}")
    };
    format!("{prefix}/{plural}")
}

fn key_of(obj: &Value) -> (String, String) {
    let meta = &obj["metadata"];
    (
        meta["namespace"].as_str().unwrap_or("").to_string(),
        meta["name"].as_str().expect("name").to_string(),
    )
}

/// A request path taken apart: collection, namespace, name.
fn route(path: &str) -> (String, String, Option<String>) {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = if segs[0] == "api" {
        (segs[..2].join("/"), &segs[2..])
    } else {
        (segs[..3].join("/"), &segs[3..])
    };
    let (ns, rest) = if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        (rest[1].to_string(), &rest[2..])
    } else {
        (String::new(), rest)
    };
    (
        format!("{prefix}/{}", rest[0]),
        ns,
        rest.get(1).map(|s| s.to_string()),
    )
}

/// The agent's namespace in tests.
pub const OWN_NAMESPACE: &str = "carve-system";

/// (API group, resource) of a collection path.
fn group_resource(collection: &str) -> (String, String) {
    let segs: Vec<&str> = collection.split('/').collect();
    if segs[0] == "api" {
        (String::new(), segs[2].to_string())
    } else {
        (segs[1].to_string(), segs[3].to_string())
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

struct Fault {
    method: Method,
    path_contains: String,
    code: StatusCode,
}

struct Inner {
    store: Store,
    faults: Vec<Fault>,
    hooks: Vec<(Method, String, Hook)>,
    seen: Vec<Seen>,
}

/// The fake server's handle, shared by the test and the serving task.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Mutex<Inner>>,
}

impl FakeApi {
    /// A fake server and a kube `Client` talking to it.
    pub fn start() -> (FakeApi, Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = FakeApi {
            inner: Arc::new(Mutex::new(Inner {
                store: Store::default(),
                faults: Vec::new(),
                hooks: Vec::new(),
                seen: Vec::new(),
            })),
        };
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_string();
                let (code, answer) = server.answer(parts.method, path, body);
                send.send_response(
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                );
            }
        });
        (api, Client::new(service, "default"))
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.inner.lock().unwrap().store)
    }

    pub fn put(&self, obj: Value) {
        self.with(|s| s.put(obj));
    }

    /// The next request with this method whose path contains the text gets
    /// this status (once).
    pub fn fail_next(&self, method: Method, path_contains: &str, code: StatusCode) {
        self.inner.lock().unwrap().faults.push(Fault {
            method,
            path_contains: path_contains.into(),
            code,
        });
    }

    /// Runs `hook` on the store when the next such request arrives, before it
    /// is answered.
    pub fn on_next(
        &self,
        method: Method,
        path_contains: &str,
        hook: impl FnOnce(&mut Store) + Send + 'static,
    ) {
        self.inner
            .lock()
            .unwrap()
            .hooks
            .push((method, path_contains.into(), Box::new(hook)));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }

    /// The requests that change something (anything but GET).
    pub fn writes(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method != Method::GET)
            .collect()
    }

    /// Notes of the Events written about the named object, in order.
    pub fn events_about(&self, name: &str) -> Vec<(String, String, String)> {
        self.with(|s| s.list("apis/events.k8s.io/v1/events"))
            .into_iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or("").to_string(),
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["note"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn answer(&self, method: Method, path: String, body: Value) -> (StatusCode, Value) {
        let mut inner = self.inner.lock().unwrap();
        inner.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
        });
        if let Some(i) = inner
            .hooks
            .iter()
            .position(|(m, p, _)| *m == method && path.contains(p.as_str()))
        {
            let (_, _, hook) = inner.hooks.remove(i);
            hook(&mut inner.store);
        }
        if let Some(i) = inner
            .faults
            .iter()
            .position(|f| f.method == method && path.contains(f.path_contains.as_str()))
        {
            let fault = inner.faults.remove(i);
            return status(fault.code, "Injected", "injected by the test");
        }
        let (collection, ns, name) = route(&path);
        // RBAC: the agent may only make the calls it declares (kinds.rs).
        let verb = match (&method, &name) {
            (&Method::GET, Some(_)) => "get",
            (&Method::GET, None) => "list",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, _) => "delete",
            _ => "unknown",
        };
        let (group, resource) = group_resource(&collection);
        if !crate::kinds::allowed(&group, &resource, verb, &ns, OWN_NAMESPACE) {
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!("{verb} {group}/{resource} in {ns:?} is not in the agent's API_CALLS"),
            );
        }
        let store = &mut inner.store;
        match (method.clone(), name) {
            (Method::GET, Some(name)) => match store.get(&collection, &ns, &name) {
                Some(obj) => (StatusCode::OK, obj.clone()),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{name} not found"),
                ),
            },
            (Method::GET, None) => {
                let items: Vec<Value> = store
                    .list(&collection)
                    .into_iter()
                    .filter(|o| ns.is_empty() || o["metadata"]["namespace"] == ns.as_str())
                    .collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List",
                           "metadata": {"resourceVersion": store.version.to_string()},
                           "items": items}),
                )
            }
            (Method::POST, None) => {
                let mut obj = body;
                if obj["metadata"]["name"].is_null() {
                    let base = obj["metadata"]["generateName"]
                        .as_str()
                        .unwrap_or("x")
                        .to_string();
                    obj["metadata"]["name"] = format!("{base}{}", store.version + 1).into();
                }
                if !ns.is_empty() {
                    obj["metadata"]["namespace"] = ns.clone().into();
                }
                let (_, name) = key_of(&obj);
                if store.get(&collection, &ns, &name).is_some() {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        &format!("{name} already exists"),
                    );
                }
                store.put(obj.clone());
                (
                    StatusCode::CREATED,
                    store.get(&collection, &ns, &name).unwrap().clone(),
                )
            }
            (Method::PUT, Some(name)) | (Method::PATCH, Some(name)) => {
                let Some(current) = store.get(&collection, &ns, &name).cloned() else {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{name} not found"),
                    );
                };
                let wanted_rv = &body["metadata"]["resourceVersion"];
                if !wanted_rv.is_null() && *wanted_rv != current["metadata"]["resourceVersion"] {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                // PUT replaces the object; a patch of any type is applied as
                // a JSON merge patch (all the agent sends).
                let next = if method == Method::PUT {
                    body
                } else {
                    let mut next = current;
                    merge(&mut next, &body);
                    next
                };
                store.put(next);
                (
                    StatusCode::OK,
                    store.get(&collection, &ns, &name).unwrap().clone(),
                )
            }
            (Method::DELETE, Some(name)) => {
                let Some(current) = store.get(&collection, &ns, &name) else {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{name} not found"),
                    );
                };
                let uid = &body["preconditions"]["uid"];
                if !uid.is_null() && *uid != current["metadata"]["uid"] {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "Precondition failed: UID in precondition does not match the object",
                    );
                }
                (
                    StatusCode::OK,
                    store.remove(&collection, &ns, &name).unwrap(),
                )
            }
            (m, _) => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{m} {path}"),
            ),
        }
    }
}
