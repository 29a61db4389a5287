//! The admin actions page: who did what, when (read from [`super::actions`]).

use super::{Admin, NAV, actions, page_or_json};
use crate::web::{AppState, render};
use askama::Template;
use axum::extract::State;
use axum::response::Response;

#[derive(Template)]
#[template(path = "admin_actions.html")]
struct ActionsPage<'a> {
    nav: &'a [(&'a str, &'a str)],
    name: &'a str,
    rows: Vec<actions::ActionRow>,
}

/// GET /admin/actions: the newest 500 actions.
pub async fn list(State(state): State<AppState>, admin: Admin) -> Response {
    let rows = match actions::list(&state.pool, 500).await {
        Ok(r) => r,
        Err(e) => return super::internal(admin.json, e),
    };
    let data = serde_json::json!({ "actions": rows });
    page_or_json(admin.json, &data, || render(&ActionsPage { nav: &NAV, name: &admin.user.name, rows }))
}
