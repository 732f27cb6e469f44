//! A fake Mailchimp Marketing API v3, faithful to what the `mailchimp` plugin uses.
//!
//! Faithful: paths under `/3.0`; HTTP Basic auth with any user name and the API key as password (401
//! "API Key Invalid" problem otherwise); `application/problem+json` error bodies (`type`, `title`,
//! `status`, `detail`, `instance`, and `errors` for validation); `PUT …/members/{hash}` checks that the hash
//! is the MD5 of the lower-cased `email_address`, applies `status_if_new` only to new members and
//! `merge_fields` only with tags the list defines (others: 400 "Invalid Resource" with field errors);
//! `POST …/tags` answers 204; `DELETE …/members/{hash}` archives (204) and 404s an unknown member;
//! `POST …/actions/delete-permanent` forgets the member (204); batch subscribe `POST /lists/{id}` takes at
//! most 500 members, answers 200 with `new_members`, `updated_members`, per-member `errors` and totals.
//! Simplified: one data center, no interests, no async `/batches`, no rate-limit headers (Mailchimp sends
//! none). Faults (`Fault`) apply to every request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::Fault;
use crate::common::{self, FaultQueue, Incoming, RecordedRequest, Reply, RequestLog, Vendor, lock};

const PROBLEM: &str = "application/problem+json";

/// A member as the fake stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// E-mail address.
    pub email_address: String,
    /// `subscribed`, `pending`, `archived`, ...
    pub status: String,
    /// Merge fields.
    pub merge_fields: BTreeMap<String, Value>,
    /// Active tags.
    pub tags: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Data {
    /// `(list, subscriber hash)` → member.
    members: BTreeMap<(String, String), Member>,
    forgotten: BTreeSet<(String, String)>,
}

#[derive(Debug)]
struct State {
    api_key: String,
    lists: BTreeMap<String, BTreeSet<String>>,
    data: Mutex<Data>,
    faults: FaultQueue,
    log: RequestLog,
}

/// A running fake Mailchimp on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct FakeMailchimp {
    state: Arc<State>,
    server: common::Server,
}

/// The subscriber hash of an e-mail: MD5 of the lower-cased address.
pub fn subscriber_hash(email: &str) -> String {
    hex::encode(Md5::digest(email.trim().to_lowercase().as_bytes()))
}

fn problem(status: StatusCode, title: &str, detail: &str, errors: Option<Value>) -> Reply {
    let mut body = json!({
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "instance": common::uuid(),
    });
    if let Some(errors) = errors {
        body["errors"] = errors;
    }
    Reply::json(status, PROBLEM, &body)
}

impl FakeMailchimp {
    /// Starts a fake with an API key and lists, each with the merge field tags it defines.
    pub async fn start(api_key: &str, lists: &[(&str, &[&str])]) -> Self {
        let state = Arc::new(State {
            api_key: api_key.to_owned(),
            lists: lists
                .iter()
                .map(|(id, tags)| {
                    (
                        (*id).to_owned(),
                        tags.iter().map(|t| (*t).to_owned()).collect(),
                    )
                })
                .collect(),
            data: Mutex::default(),
            faults: FaultQueue::default(),
            log: RequestLog::default(),
        });
        let (listener, addr) = common::bind().await;
        let server = common::serve(listener, addr, state.clone());
        Self { state, server }
    }

    /// The API root, e.g. `http://127.0.0.1:PORT/3.0`.
    pub fn api_root(&self) -> String {
        format!("{}/3.0", self.server.base_url())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.server
            .base_url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// A member of a list by e-mail.
    pub fn member(&self, list: &str, email: &str) -> Option<Member> {
        lock(&self.state.data)
            .members
            .get(&(list.to_owned(), subscriber_hash(email)))
            .cloned()
    }

    /// Members of a list.
    pub fn members(&self, list: &str) -> Vec<Member> {
        lock(&self.state.data)
            .members
            .iter()
            .filter(|((l, _), _)| l == list)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Whether an address was permanently deleted.
    pub fn forgotten(&self, list: &str, email: &str) -> bool {
        lock(&self.state.data)
            .forgotten
            .contains(&(list.to_owned(), subscriber_hash(email)))
    }

    /// Queues a fault.
    pub fn inject(&self, fault: Fault) {
        self.state.faults.push(fault);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.log.all()
    }
}

impl State {
    fn authorised(&self, request: &Incoming) -> bool {
        let Some(encoded) = request
            .header("authorization")
            .and_then(|h| h.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let text = String::from_utf8_lossy(&decoded);
        text.split_once(':')
            .is_some_and(|(_, key)| key == self.api_key)
    }

    fn check_merge_fields(
        &self,
        list: &str,
        fields: &serde_json::Map<String, Value>,
    ) -> Result<(), Reply> {
        let known = self.lists.get(list).cloned().unwrap_or_default();
        let errors: Vec<Value> = fields
            .keys()
            .filter(|k| !known.contains(*k))
            .map(|k| json!({"field": format!("merge_fields.{k}"), "message": format!("The merge field `{k}` does not exist in this audience")}))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(problem(
                StatusCode::BAD_REQUEST,
                "Invalid Resource",
                "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
                Some(json!(errors)),
            ))
        }
    }

    fn upsert(&self, list: &str, hash: &str, body: &Value) -> Reply {
        let Some(email) = body["email_address"].as_str() else {
            return problem(
                StatusCode::BAD_REQUEST,
                "Invalid Resource",
                "The resource submitted could not be validated.",
                Some(
                    json!([{"field": "email_address", "message": "This value should not be blank."}]),
                ),
            );
        };
        if !email.contains('@') {
            return problem(
                StatusCode::BAD_REQUEST,
                "Invalid Resource",
                &format!("{email} looks fake or invalid, please enter a real email address."),
                None,
            );
        }
        if subscriber_hash(email) != hash {
            return problem(
                StatusCode::BAD_REQUEST,
                "Invalid Resource",
                "The resource submitted could not be validated: the subscriber hash does not match the email address.",
                None,
            );
        }
        let merge_fields = body["merge_fields"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if let Err(reply) = self.check_merge_fields(list, &merge_fields) {
            return reply;
        }
        let mut data = lock(&self.data);
        let key = (list.to_owned(), hash.to_owned());
        if data.forgotten.contains(&key) {
            return problem(
                StatusCode::BAD_REQUEST,
                "Forgotten Email Not Subscribed",
                &format!("{email} was permanently deleted and cannot be re-imported."),
                None,
            );
        }
        let status_if_new = body["status_if_new"]
            .as_str()
            .or(body["status"].as_str())
            .unwrap_or("subscribed")
            .to_owned();
        let member = data.members.entry(key).or_insert_with(|| Member {
            email_address: email.to_owned(),
            status: status_if_new,
            merge_fields: BTreeMap::new(),
            tags: BTreeSet::new(),
        });
        if member.status == "archived" {
            member.status = body["status_if_new"]
                .as_str()
                .unwrap_or("subscribed")
                .to_owned();
        }
        if let Some(status) = body["status"].as_str() {
            member.status = status.to_owned();
        }
        member.merge_fields.extend(merge_fields);
        let answer = json!({"id": hash, "email_address": member.email_address, "status": member.status, "merge_fields": member.merge_fields, "list_id": list});
        Reply::json(StatusCode::OK, "application/json", &answer)
    }

    fn batch_subscribe(&self, list: &str, body: &Value) -> Reply {
        let Some(members) = body["members"].as_array() else {
            return problem(
                StatusCode::BAD_REQUEST,
                "Invalid Resource",
                "The resource submitted could not be validated.",
                Some(json!([{"field": "members", "message": "Required field"}])),
            );
        };
        if members.len() > 500 {
            return problem(
                StatusCode::BAD_REQUEST,
                "Invalid Resource",
                "The resource submitted could not be validated.",
                Some(
                    json!([{"field": "members", "message": "You may only add up to 500 members in a single call."}]),
                ),
            );
        }
        let update_existing = body["update_existing"].as_bool().unwrap_or(false);
        let (mut created, mut updated, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for member in members {
            let email = member["email_address"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let hash = subscriber_hash(&email);
            let exists = lock(&self.data)
                .members
                .contains_key(&(list.to_owned(), hash.clone()));
            if exists && !update_existing {
                errors.push(json!({"email_address": email, "error": format!("{email} is already a list member."), "error_code": "ERROR_CONTACT_EXISTS"}));
                continue;
            }
            let mut single = member.clone();
            if single.get("status_if_new").is_none() {
                single["status_if_new"] = member["status"].clone();
                single.as_object_mut().map(|m| m.remove("status"));
            }
            let reply = self.upsert(list, &hash, &single);
            if reply.status != StatusCode::OK {
                let detail: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
                errors.push(json!({"email_address": email, "error": detail["detail"], "error_code": "ERROR_GENERIC"}));
                continue;
            }
            if let Some(tags) = member["tags"].as_array() {
                let mut data = lock(&self.data);
                if let Some(stored) = data.members.get_mut(&(list.to_owned(), hash.clone())) {
                    stored
                        .tags
                        .extend(tags.iter().filter_map(|t| t.as_str().map(str::to_owned)));
                }
            }
            let entry = json!({"email_address": email, "id": hash});
            if exists {
                updated.push(entry)
            } else {
                created.push(entry)
            }
        }
        Reply::json(
            StatusCode::OK,
            "application/json",
            &json!({
                "new_members": created, "updated_members": updated, "errors": errors,
                "total_created": created.len(), "total_updated": updated.len(), "error_count": errors.len()
            }),
        )
    }
}

impl Vendor for State {
    fn faults(&self) -> &FaultQueue {
        &self.faults
    }

    fn log(&self) -> &RequestLog {
        &self.log
    }

    fn fault_exempt(&self, _request: &Incoming) -> bool {
        false
    }

    fn credential(&self, request: &Incoming) -> Option<String> {
        request.header("authorization").map(str::to_owned)
    }

    fn injected_server_error(&self, status: StatusCode) -> Reply {
        problem(
            status,
            "Internal Server Error",
            "An unexpected internal error has occurred. Please contact Support for more information.",
            None,
        )
    }

    fn injected_rate_limit(&self, _retry_after: Option<f64>) -> Reply {
        problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            "You have exceeded the limit of 10 simultaneous connections.",
            None,
        )
    }

    fn handle(&self, request: &Incoming) -> Reply {
        if !self.authorised(request) {
            return problem(
                StatusCode::UNAUTHORIZED,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
                None,
            );
        }
        let parts: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let not_found = || {
            problem(
                StatusCode::NOT_FOUND,
                "Resource Not Found",
                "The requested resource could not be found.",
                None,
            )
        };
        match (&request.method, parts.as_slice()) {
            (_, ["3.0", "lists", list, ..]) if !self.lists.contains_key(*list) => not_found(),
            (&Method::PUT, ["3.0", "lists", list, "members", hash]) => {
                self.upsert(list, hash, &body)
            }
            (&Method::POST, ["3.0", "lists", list]) => self.batch_subscribe(list, &body),
            (&Method::POST, ["3.0", "lists", list, "members", hash, "tags"]) => {
                let mut data = lock(&self.data);
                let Some(member) = data
                    .members
                    .get_mut(&((*list).to_owned(), (*hash).to_owned()))
                else {
                    return not_found();
                };
                for tag in body["tags"].as_array().into_iter().flatten() {
                    let name = tag["name"].as_str().unwrap_or_default().to_owned();
                    if tag["status"].as_str() == Some("inactive") {
                        member.tags.remove(&name);
                    } else {
                        member.tags.insert(name);
                    }
                }
                Reply::raw(StatusCode::NO_CONTENT, "application/json", Vec::new())
            }
            (&Method::DELETE, ["3.0", "lists", list, "members", hash]) => {
                let mut data = lock(&self.data);
                match data
                    .members
                    .get_mut(&((*list).to_owned(), (*hash).to_owned()))
                {
                    Some(member) if member.status != "archived" => {
                        member.status = "archived".into();
                        Reply::raw(StatusCode::NO_CONTENT, "application/json", Vec::new())
                    }
                    _ => not_found(),
                }
            }
            (
                &Method::POST,
                [
                    "3.0",
                    "lists",
                    list,
                    "members",
                    hash,
                    "actions",
                    "delete-permanent",
                ],
            ) => {
                let mut data = lock(&self.data);
                let key = ((*list).to_owned(), (*hash).to_owned());
                if data.members.remove(&key).is_none() {
                    return not_found();
                }
                data.forgotten.insert(key);
                Reply::raw(StatusCode::NO_CONTENT, "application/json", Vec::new())
            }
            _ => not_found(),
        }
    }
}
