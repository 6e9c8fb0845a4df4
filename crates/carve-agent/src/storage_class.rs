//! StorageClass validation: a carve StorageClass whose parameters carve would
//! refuse gives claims that are never provisioned; with capacity tracking the
//! user sees only "did not have enough free storage". The agent checks every
//! carve class with the code CreateVolume uses (carve_core::params) and says
//! what is wrong, on the class and on every Pending claim that uses it.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use carve_core::params::{self, BadParams, Params};

use crate::kinds;
use crate::notify::Kind;
use crate::placement::is_pending;
use crate::{Ctx, Error};

/// A class's parameters as carve will see them.
pub fn check(class: &StorageClass) -> Result<Params, BadParams> {
    let parameters: HashMap<String, String> = class
        .parameters
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    params::check_storage_class(&parameters)
}

fn why(class_name: &str, bad: &BadParams) -> String {
    format!(
        "StorageClass {class_name} is invalid for carve: {bad}. Claims of this class cannot be \
         provisioned; StorageClasses cannot be edited, so delete it and create it again with \
         valid parameters."
    )
}

/// The Warning a Pending claim of a bad class gets.
pub async fn warn_claim(ctx: &Ctx, pvc: &PersistentVolumeClaim, class_name: &str, bad: &BadParams) {
    ctx.notify
        .event(
            &pvc.object_ref(&()),
            Kind::Warning,
            "InvalidStorageClass",
            why(class_name, bad),
        )
        .await;
}

pub async fn reconcile(class: Arc<StorageClass>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !kinds::is_carve_class(&class, &ctx.driver) {
        return Ok(Action::await_change());
    }
    let name = class.name_any();
    let Err(bad) = check(&class) else {
        return Ok(Action::await_change());
    };
    ctx.notify
        .event(
            &class.object_ref(&()),
            Kind::Warning,
            "InvalidParameters",
            why(&name, &bad),
        )
        .await;
    let claims: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    for pvc in claims.list(&Default::default()).await?.items {
        let of_class = pvc
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            == Some(name.as_str());
        if of_class && is_pending(&pvc) {
            warn_claim(&ctx, &pvc, &name, &bad).await;
        }
    }
    Ok(Action::await_change())
}
