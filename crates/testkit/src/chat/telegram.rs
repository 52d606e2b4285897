//! A fake Telegram Bot API: `getUpdates` (long polling with `offset` and `timeout`),
//! `sendMessage`, `editMessageText`, `answerCallbackQuery`, `getFile` and file downloads under
//! `/bot<token>/…` and `/file/bot<token>/…`.
//!
//! Chat and user ids are numbers as text (`"-100"`, `"7"`). A direct chat's id is the user's.
//! `say*` return the id the connector reports as `message_id`: `<chat>:<message_id>`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{RateLimits, Record, Request, Response, Sent};

/// The bot's own user id.
pub const BOT_ID: i64 = 999;

#[derive(Default)]
struct State {
    /// Every update, in order; `update_id` = index + 1.
    updates: Vec<Value>,
    /// The highest offset a `getUpdates` asked for: updates below it are confirmed.
    offset: i64,
    next_message: i64,
    /// (chat, message id) → (text, buttons' data).
    messages: HashMap<(String, i64), (String, Vec<String>)>,
    /// file_id → contents.
    files: HashMap<String, Vec<u8>>,
    /// Callback query answers: (callback id, text).
    answers: Vec<(String, String)>,
    /// The methods called, in order, with their bodies.
    calls: Vec<(String, Value)>,
}

struct Inner {
    token: String,
    state: Mutex<State>,
    arrived: Condvar,
    record: Record,
    limits: RateLimits,
}

/// A running fake.
pub struct Fake {
    port: u16,
    inner: Arc<Inner>,
}

impl Fake {
    /// Starts a fake that accepts `token`, on 127.0.0.1.
    #[must_use]
    pub fn start(token: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
            token: token.to_owned(),
            state: Mutex::new(State {
                next_message: 1,
                ..State::default()
            }),
            arrived: Condvar::new(),
            record: Record::default(),
            limits: RateLimits::default(),
        });
        let handler = Arc::clone(&inner);
        super::serve_http(listener, Arc::new(move |request| handler.handle(&request)));
        Self { port, inner }
    }

    /// The API base to configure as `base_url`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// User `user` writes `text` in group chat `chat`.
    pub fn say(&self, chat: i64, user: i64, text: &str) -> String {
        self.message(chat, user, "group", json!({ "text": text }))
    }

    /// User `user` writes `text` to the bot directly.
    pub fn say_direct(&self, user: i64, text: &str) -> String {
        self.message(user, user, "private", json!({ "text": text }))
    }

    /// Another bot writes in `chat` (the connector must ignore it).
    pub fn say_as_bot(&self, chat: i64, bot: i64, text: &str) -> String {
        let mut state = self.inner.state.lock().unwrap();
        let id = state.next_message;
        state.next_message += 1;
        let message = json!({
            "message_id": id,
            "from": {"id": bot, "is_bot": true, "first_name": "Other bot"},
            "chat": {"id": chat, "type": "group"},
            "date": 0,
            "text": text,
        });
        push_update(&mut state, json!({ "message": message }));
        self.inner.arrived.notify_all();
        format!("{chat}:{id}")
    }

    /// User `user` sends a document `name` (`media_type`) with `caption` directly.
    pub fn send_document(
        &self,
        user: i64,
        name: &str,
        media_type: &str,
        contents: &[u8],
        caption: &str,
    ) -> String {
        let file_id = {
            let mut state = self.inner.state.lock().unwrap();
            let file_id = format!("file{}", state.files.len() + 1);
            state.files.insert(file_id.clone(), contents.to_vec());
            file_id
        };
        self.message(
            user,
            user,
            "private",
            json!({
                "caption": caption,
                "document": {
                    "file_id": file_id,
                    "file_unique_id": format!("u{file_id}"),
                    "file_name": name,
                    "mime_type": media_type,
                    "file_size": contents.len(),
                },
            }),
        )
    }

    fn message(&self, chat: i64, user: i64, chat_type: &str, content: Value) -> String {
        let mut state = self.inner.state.lock().unwrap();
        let id = state.next_message;
        state.next_message += 1;
        let mut message = json!({
            "message_id": id,
            "from": {"id": user, "is_bot": false, "first_name": format!("User {user}")},
            "chat": {"id": chat, "type": chat_type},
            "date": 0,
        });
        for (k, v) in content.as_object().unwrap() {
            message[k] = v.clone();
        }
        push_update(&mut state, json!({ "message": message }));
        self.inner.arrived.notify_all();
        format!("{chat}:{id}")
    }

    /// User `user` presses the button with `data` on the last message that carries one;
    /// returns the callback query's id.
    pub fn press(&self, user: i64, data: &str) -> String {
        let found = self
            .inner
            .record
            .all()
            .into_iter()
            .rev()
            .find(|s| s.buttons.iter().any(|(_, d)| d == data))
            .unwrap_or_else(|| panic!("no message carries a button with data `{data}`"));
        self.press_on(user, &found.chat, &found.id, data)
    }

    /// User `user` presses a button with `data` on message `message_id` of `chat` (the data
    /// is whatever the test says: a forged press).
    pub fn press_on(&self, user: i64, chat: &str, message_id: &str, data: &str) -> String {
        let mut state = self.inner.state.lock().unwrap();
        let message_id: i64 = message_id.parse().unwrap();
        let text = state
            .messages
            .get(&(chat.to_owned(), message_id))
            .map(|(t, _)| t.clone())
            .unwrap_or_default();
        let query_id = format!("cb{}", state.updates.len() + 1);
        push_update(
            &mut state,
            json!({"callback_query": {
                "id": query_id,
                "from": {"id": user, "is_bot": false, "first_name": format!("User {user}")},
                "message": {
                    "message_id": message_id,
                    "chat": {"id": chat.parse::<i64>().unwrap(), "type": "private"},
                    "date": 0,
                    "text": text,
                },
                "chat_instance": "1",
                "data": data,
            }}),
        );
        self.inner.arrived.notify_all();
        query_id
    }

    /// Every message the bot posted or edited, in order.
    #[must_use]
    pub fn sent(&self) -> Vec<Sent> {
        self.inner.record.all()
    }

    /// Waits for a sent message matching `pred`; panics after `timeout`.
    pub fn wait_sent(&self, pred: impl Fn(&Sent) -> bool, timeout: Duration) -> Sent {
        self.inner.record.wait(pred, timeout)
    }

    /// The next `n` posting requests get a 429 asking to wait `retry_after` (whole seconds
    /// are what Telegram sends; fractions are sent as they are).
    pub fn rate_limit_next(&self, n: u32, retry_after: Duration) {
        self.inner.limits.set(n, retry_after);
    }

    /// Telegram has no connection to drop: long polls are plain requests.
    pub fn drop_connection(&self) {}

    /// The offset the connector confirmed with its last `getUpdates`: every update below it
    /// is acknowledged.
    #[must_use]
    pub fn confirmed_offset(&self) -> i64 {
        self.inner.state.lock().unwrap().offset
    }

    /// The id of the update a message id (from `say`) or callback id arrived in.
    #[must_use]
    pub fn update_id_of(&self, id: &str) -> i64 {
        let state = self.inner.state.lock().unwrap();
        let index = state
            .updates
            .iter()
            .position(|u| {
                let m = &u["message"];
                let as_message = format!("{}:{}", m["chat"]["id"], m["message_id"]);
                as_message == id || u["callback_query"]["id"] == id
            })
            .unwrap();
        i64::try_from(index).unwrap() + 1
    }

    /// Waits until the connector confirmed `update_id` (asked for a later offset).
    pub fn wait_confirmed(&self, update_id: i64, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.confirmed_offset() <= update_id {
            assert!(Instant::now() < end, "update {update_id} not confirmed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Callback query answers: (callback id, text).
    #[must_use]
    pub fn answers(&self) -> Vec<(String, String)> {
        self.inner.state.lock().unwrap().answers.clone()
    }

    /// Every method called, in order, with its body.
    #[must_use]
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.inner.state.lock().unwrap().calls.clone()
    }
}

fn push_update(state: &mut State, mut update: Value) {
    update["update_id"] = json!(state.updates.len() + 1);
    state.updates.push(update);
}

fn ok(result: Value) -> Response {
    Response::json(200, &json!({"ok": true, "result": result}))
}

fn fail(code: u16, description: &str) -> Response {
    Response::json(
        code,
        &json!({"ok": false, "error_code": code, "description": description}),
    )
}

#[allow(
    clippy::type_complexity,
    reason = "two lists of pairs, named at the call"
)]
fn buttons_of(body: &Value) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let mut buttons = Vec::new();
    let mut links = Vec::new();
    for row in body["reply_markup"]["inline_keyboard"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        for b in row.as_array().cloned().unwrap_or_default() {
            let label = b["text"].as_str().unwrap_or("").to_owned();
            if let Some(data) = b["callback_data"].as_str() {
                buttons.push((label, data.to_owned()));
            } else if let Some(url) = b["url"].as_str() {
                links.push((label, url.to_owned()));
            }
        }
    }
    (buttons, links)
}

fn chat_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Inner {
    fn handle(&self, request: &Request) -> Response {
        let (file, rest) = if let Some(rest) = request.path.strip_prefix("/file/bot") {
            (true, rest)
        } else if let Some(rest) = request.path.strip_prefix("/bot") {
            (false, rest)
        } else {
            return fail(404, "Not Found");
        };
        let Some((token, method)) = rest.split_once('/') else {
            return fail(404, "Not Found");
        };
        if token != self.token {
            return fail(401, "Unauthorized");
        }
        if file {
            let state = self.state.lock().unwrap();
            let id = method.strip_prefix("documents/").unwrap_or(method);
            return match state.files.get(id) {
                Some(bytes) => Response::bytes(bytes.clone()),
                None => fail(404, "Not Found"),
            };
        }
        let body = request.json();
        self.state
            .lock()
            .unwrap()
            .calls
            .push((method.to_owned(), body.clone()));
        if matches!(method, "sendMessage" | "editMessageText")
            && let Some(wait) = self.limits.take()
        {
            let secs = wait.as_secs_f64();
            return Response::json(
                429,
                &json!({
                    "ok": false,
                    "error_code": 429,
                    "description": format!("Too Many Requests: retry after {secs}"),
                    "parameters": {"retry_after": secs},
                }),
            );
        }
        match method {
            "getUpdates" => self.get_updates(&body),
            "sendMessage" => self.send_message(&body),
            "editMessageText" => self.edit_message(&body),
            "answerCallbackQuery" => {
                self.state.lock().unwrap().answers.push((
                    body["callback_query_id"].as_str().unwrap_or("").to_owned(),
                    body["text"].as_str().unwrap_or("").to_owned(),
                ));
                ok(json!(true))
            }
            "getFile" => {
                let state = self.state.lock().unwrap();
                let id = body["file_id"].as_str().unwrap_or("");
                match state.files.get(id) {
                    Some(bytes) => ok(json!({
                        "file_id": id,
                        "file_unique_id": format!("u{id}"),
                        "file_size": bytes.len(),
                        "file_path": format!("documents/{id}"),
                    })),
                    None => fail(400, "Bad Request: invalid file_id"),
                }
            }
            _ => fail(404, "Not Found"),
        }
    }

    fn get_updates(&self, body: &Value) -> Response {
        let offset = body["offset"].as_i64().unwrap_or(0);
        let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0));
        let end = Instant::now() + timeout;
        let mut state = self.state.lock().unwrap();
        state.offset = state.offset.max(offset);
        loop {
            let first = usize::try_from((offset - 1).max(0)).unwrap();
            let pending: Vec<Value> = state.updates.iter().skip(first).cloned().collect();
            let now = Instant::now();
            if !pending.is_empty() || now >= end {
                return ok(Value::Array(pending));
            }
            state = self.arrived.wait_timeout(state, end - now).unwrap().0;
        }
    }

    fn send_message(&self, body: &Value) -> Response {
        let chat = chat_text(&body["chat_id"]);
        let text = body["text"].as_str().unwrap_or("").to_owned();
        if text.is_empty() || text.chars().count() > 4096 {
            return fail(400, "Bad Request: message text is empty or too long");
        }
        let (buttons, links) = buttons_of(body);
        let id = {
            let mut state = self.state.lock().unwrap();
            let id = state.next_message;
            state.next_message += 1;
            state.messages.insert(
                (chat.clone(), id),
                (
                    text.clone(),
                    buttons.iter().map(|(_, d)| d.clone()).collect(),
                ),
            );
            id
        };
        self.record.push(Sent {
            chat: chat.clone(),
            id: id.to_string(),
            text: text.clone(),
            edit: false,
            buttons,
            links,
            body: body.clone(),
        });
        ok(json!({
            "message_id": id,
            "from": {"id": BOT_ID, "is_bot": true, "first_name": "P3AK"},
            "chat": {"id": chat.parse::<i64>().unwrap_or(0), "type": "private"},
            "date": 0,
            "text": text,
        }))
    }

    fn edit_message(&self, body: &Value) -> Response {
        let chat = chat_text(&body["chat_id"]);
        let id = body["message_id"].as_i64().unwrap_or(0);
        let text = body["text"].as_str().unwrap_or("").to_owned();
        if text.is_empty() || text.chars().count() > 4096 {
            return fail(400, "Bad Request: message text is empty or too long");
        }
        let (buttons, links) = buttons_of(body);
        {
            let mut state = self.state.lock().unwrap();
            let Some(old) = state.messages.get_mut(&(chat.clone(), id)) else {
                return fail(400, "Bad Request: message to edit not found");
            };
            if old.0 == text && old.1.is_empty() && buttons.is_empty() {
                return fail(
                    400,
                    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same",
                );
            }
            *old = (
                text.clone(),
                buttons.iter().map(|(_, d)| d.clone()).collect(),
            );
        }
        self.record.push(Sent {
            chat,
            id: id.to_string(),
            text: text.clone(),
            edit: true,
            buttons,
            links,
            body: body.clone(),
        });
        ok(json!({"message_id": id, "date": 0, "text": text}))
    }
}
