//! The agent's RBAC, rendered from [`crate::kinds::API_CALLS`]: a ClusterRole
//! for its cluster-wide calls, a Role in its own namespace, and a separate
//! ClusterRole for deleting claims that only the delete-claims component
//! binds. A test holds the committed manifests equal to this rendering.

use crate::kinds::{Scope, API_CALLS};

fn rules(scope: Scope) -> String {
    let mut out = String::new();
    for (group, resource, verbs, s, why) in API_CALLS {
        if *s != scope {
            continue;
        }
        let verbs: Vec<String> = verbs.iter().map(|v| format!("\"{v}\"")).collect();
        out.push_str(&format!(
            "  # {why}\n  - apiGroups: [\"{group}\"]\n    resources: [\"{resource}\"]\n    verbs: [{}]\n",
            verbs.join(", ")
        ));
    }
    out
}

fn binding(kind: &str, name: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: {kind}Binding\nmetadata:\n  name: {name}\n\
         subjects:\n  - kind: ServiceAccount\n    name: carve-agent\n    namespace: carve-system\n\
         roleRef:\n  kind: {kind}\n  name: {name}\n  apiGroup: rbac.authorization.k8s.io\n"
    )
}

const HEADER: &str = "# Generated from crates/carve-agent/src/kinds.rs (API_CALLS) by\n\
# `UPDATE_RBAC=1 cargo test -p carve-agent rbac`; a test keeps it equal.\n";

/// deploy/kubernetes/base/agent/rbac.yaml
pub fn base() -> String {
    format!(
        "{HEADER}apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: carve-agent\nrules:\n{}---\n{}---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: carve-agent\nrules:\n{}---\n{}",
        rules(Scope::Cluster),
        binding("ClusterRole", "carve-agent"),
        rules(Scope::OwnNamespace),
        binding("Role", "carve-agent"),
    )
}

/// deploy/kubernetes/components/agent-delete-claims/rbac.yaml
pub fn delete_claims() -> String {
    format!(
        "{HEADER}apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: carve-agent-delete-claims\nrules:\n{}---\n{}",
        rules(Scope::DeleteClaims),
        binding("ClusterRole", "carve-agent-delete-claims"),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn same_as_committed(rel: &str, rendered: String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(rel);
        if std::env::var_os("UPDATE_RBAC").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &rendered).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            committed, rendered,
            "{rel} differs from the agent's API_CALLS; UPDATE_RBAC=1 cargo test -p carve-agent rbac"
        );
    }

    #[test]
    fn rbac_manifests_are_rendered_from_the_agents_calls() {
        same_as_committed("deploy/kubernetes/base/agent/rbac.yaml", super::base());
        same_as_committed(
            "deploy/kubernetes/components/agent-delete-claims/rbac.yaml",
            super::delete_claims(),
        );
    }
}
