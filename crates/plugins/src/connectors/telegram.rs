//! `telegram`: a connector on the Telegram Bot API.
//!
//! Messages arrive by long polling `getUpdates` (`message` and `callback_query` updates
//! only); the offset moves past an update only once the kernel has it. Replies go out with
//! `sendMessage`/`editMessageText` without `parse_mode` (Telegram shows the text literally) and
//! without link previews; approvals as an inline keyboard (`callback_data` = the button's
//! data, the console link as a `url` button), presses answered with `answerCallbackQuery`.
//! Documents, voice notes, audio and photos come as attachments, downloaded with `getFile`
//! up to `max_attachment_bytes`. A 429's `parameters.retry_after` is honoured.
//!
//! The token is part of every URL (`/bot<token>/<method>`): failures never show a URL.
//!
//! Config: `base_url` (default `https://api.telegram.org`), `max_message_bytes`,
//! `max_attachment_bytes`.

use std::sync::Arc;
use std::time::Duration;

use data_encoding::BASE64;
use p3ak_proto::{Credential, ErrorKind};
use p3ak_sdk::connector::{
    Attachment, Button, Connector, Event, Incoming, Log, Platform, Posted, Poster, Pressed, Setup,
};
use p3ak_sdk::runtime::ToolFailure;
use reqwest::blocking::Client;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Common, MAX_API_BYTES};
use crate::PluginError;

/// The real API.
pub const DEFAULT_BASE_URL: &str = "https://api.telegram.org";
/// Telegram's longest message, in characters.
pub const TEXT_LIMIT: usize = 4096;
/// Telegram's longest callback answer, in characters.
const ANSWER_LIMIT: usize = 200;

/// `[plugins.NAME] config` of a Telegram connector.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    max_message_bytes: Option<usize>,
    #[serde(default)]
    max_attachment_bytes: Option<u64>,
}

/// Builds the connector from its `welcome` and token.
///
/// # Errors
///
/// An invalid config.
pub fn connector(setup: Setup<'_>) -> Result<Connector, PluginError> {
    let config: Config = p3ak_sdk::parse_config(&setup.welcome.config)?;
    let common = Common::new(
        config.base_url.as_deref(),
        DEFAULT_BASE_URL,
        config.max_message_bytes,
        config.max_attachment_bytes,
    )?;
    if setup.token.expose().trim().is_empty() || setup.token.expose().contains(['/', '?', '#']) {
        return Err(PluginError::Key(
            "the Telegram bot token is empty or malformed".to_owned(),
        ));
    }
    let api = Arc::new(Api {
        // Long polls wait up to 50 s; a request may take that and more.
        client: super::client(Duration::from_secs(75))?,
        base: common.base,
        token: setup.token,
        log: setup.log,
        max_attachment_bytes: common.max_attachment_bytes,
    });
    Ok(Connector {
        platform: Box::new(Updates {
            api: Arc::clone(&api),
            offset: 0,
        }),
        poster: api,
        max_message_bytes: common.max_message_bytes,
    })
}

/// The Bot API, as this connector calls it.
struct Api {
    client: Client,
    base: reqwest::Url,
    token: Credential,
    log: Log,
    max_attachment_bytes: u64,
}

/// Telegram's answer envelope.
#[derive(Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ReplyParameters>,
}

#[derive(Deserialize)]
struct ReplyParameters {
    #[serde(default)]
    retry_after: Option<f64>,
}

impl Api {
    fn url(&self, path: &str) -> Result<reqwest::Url, ToolFailure> {
        self.base
            .join(path)
            .map_err(|_| ToolFailure::permanent("telegram: cannot build the request URL"))
    }

    /// Calls `method` with `body`; returns its `result`.
    fn call(&self, method: &str, body: &Value) -> Result<Value, ToolFailure> {
        let url = self.url(&format!("./bot{}/{method}", self.token.expose()))?;
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ToolFailure::permanent(format!("telegram {method}: {e}")))?;
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .send()
            .map_err(|e| super::network_failure("telegram", e))?;
        let status = response.status().as_u16();
        let bytes = super::read_capped(response, MAX_API_BYTES)
            .map_err(|e| ToolFailure::transient(format!("telegram {method}: {e}")))?
            .ok_or_else(|| {
                ToolFailure::transient(format!("telegram {method}: the answer is too long"))
            })?;
        let reply: Reply = serde_json::from_slice(&bytes).map_err(|_| {
            ToolFailure::transient(format!(
                "telegram {method}: HTTP {status} with an answer that is not the Bot API's"
            ))
        })?;
        if reply.ok {
            return Ok(reply.result);
        }
        let code = reply.error_code.unwrap_or(status);
        let description = self.log.redact(reply.description.as_deref().unwrap_or(""));
        let message = format!("telegram {method}: {code} {description}");
        Err(match code {
            429 => ToolFailure::rate_limited(
                message,
                reply
                    .parameters
                    .and_then(|p| p.retry_after)
                    .map(super::seconds_to_ms),
            ),
            401 | 404 => ToolFailure::new(ErrorKind::Auth, message),
            400 => ToolFailure::invalid(message),
            403 => ToolFailure::permanent(message),
            _ => ToolFailure::transient(message),
        })
    }

    /// Downloads a file by its `file_id`, when it is within the size limit.
    fn download(&self, file_id: &str, known_size: Option<u64>) -> Option<String> {
        if known_size.is_some_and(|s| s > self.max_attachment_bytes) {
            return None;
        }
        let file = match self.call("getFile", &json!({ "file_id": file_id })) {
            Ok(file) => file,
            Err(f) => {
                self.log
                    .line(&format!("cannot fetch an attachment: {}", f.message));
                return None;
            }
        };
        if file
            .get("file_size")
            .and_then(Value::as_u64)
            .is_some_and(|s| s > self.max_attachment_bytes)
        {
            return None;
        }
        let path = file.get("file_path").and_then(Value::as_str)?;
        let url = self
            .url(&format!("./file/bot{}/{path}", self.token.expose()))
            .ok()?;
        let response = match self.client.get(url).send() {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                self.log.line(&format!(
                    "cannot download an attachment: HTTP {}",
                    r.status().as_u16()
                ));
                return None;
            }
            Err(e) => {
                self.log.line(&format!(
                    "cannot download an attachment: {}",
                    super::network_failure("telegram", e).message
                ));
                return None;
            }
        };
        match super::read_capped(response, self.max_attachment_bytes) {
            Ok(Some(bytes)) => Some(BASE64.encode(&bytes)),
            Ok(None) => None,
            Err(e) => {
                self.log
                    .line(&format!("cannot download an attachment: {e}"));
                None
            }
        }
    }

    fn attachments(&self, message: &Value) -> Vec<Attachment> {
        let mut found = Vec::new();
        let mut add = |file: &Value, name: String, media_type: &str| {
            let Some(file_id) = file.get("file_id").and_then(Value::as_str) else {
                return;
            };
            let size = file.get("file_size").and_then(Value::as_u64);
            let data = self.download(file_id, size);
            let size = size.unwrap_or_else(|| {
                data.as_ref()
                    .and_then(|d| BASE64.decode(d.as_bytes()).ok())
                    .map_or(0, |b| u64::try_from(b.len()).unwrap_or(u64::MAX))
            });
            found.push(Attachment {
                name,
                media_type: file
                    .get("mime_type")
                    .and_then(Value::as_str)
                    .unwrap_or(media_type)
                    .to_owned(),
                size,
                data,
            });
        };
        let name_of = |file: &Value, default: &str| {
            file.get("file_name")
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        if let Some(file) = message.get("document") {
            add(file, name_of(file, "document"), "application/octet-stream");
        }
        if let Some(file) = message.get("voice") {
            add(file, name_of(file, "voice.ogg"), "audio/ogg");
        }
        if let Some(file) = message.get("audio") {
            add(file, name_of(file, "audio"), "audio/mpeg");
        }
        // Photos come in several sizes: the largest.
        if let Some(file) = message
            .get("photo")
            .and_then(Value::as_array)
            .and_then(|sizes| sizes.last())
        {
            add(file, "photo.jpg".to_owned(), "image/jpeg");
        }
        found
    }

    fn send_text(
        &self,
        chat: &str,
        text: &str,
        markup: Option<Value>,
    ) -> Result<String, ToolFailure> {
        let mut body = json!({
            "chat_id": chat_id(chat),
            "text": text,
            "link_preview_options": {"is_disabled": true},
        });
        if let (Some(markup), Some(object)) = (markup, body.as_object_mut()) {
            object.insert("reply_markup".to_owned(), markup);
        }
        let message = self.call("sendMessage", &body)?;
        message
            .get("message_id")
            .and_then(Value::as_i64)
            .map(|id| id.to_string())
            .ok_or_else(|| ToolFailure::transient("telegram sendMessage: no message_id"))
    }
}

/// A chat id as Telegram takes it: a number, or `@channel`.
fn chat_id(chat: &str) -> Value {
    chat.parse::<i64>()
        .map_or_else(|_| json!(chat), |n| json!(n))
}

fn user_name(from: &Value) -> Option<String> {
    let first = from.get("first_name").and_then(Value::as_str);
    let last = from.get("last_name").and_then(Value::as_str);
    let username = from.get("username").and_then(Value::as_str);
    match (first, last) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (Some(f), None) => Some(f.to_owned()),
        _ => username.map(str::to_owned),
    }
}

fn id_text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_i64).map(|n| n.to_string())
}

/// The polling half: `getUpdates` from `offset`.
struct Updates {
    api: Arc<Api>,
    offset: i64,
}

impl Updates {
    /// The event an update stands for, if any (a bot's message or a service message is none).
    fn event(&self, update: &Value, update_id: i64) -> Option<Event> {
        let receipt = update_id.to_string();
        if let Some(message) = update.get("message") {
            let from = message.get("from")?;
            if from.get("is_bot").and_then(Value::as_bool).unwrap_or(false) {
                return None;
            }
            let chat = message.get("chat")?;
            let chat_id = id_text(chat.get("id"))?;
            let text = message
                .get("text")
                .or_else(|| message.get("caption"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let attachments = self.api.attachments(message);
            if text.is_empty() && attachments.is_empty() {
                return None;
            }
            let message_id = id_text(message.get("message_id"))?;
            return Some(Event::Message(Incoming {
                message_id: format!("{chat_id}:{message_id}"),
                user: id_text(from.get("id"))?,
                user_name: user_name(from),
                direct: chat.get("type").and_then(Value::as_str) == Some("private"),
                chat: chat_id,
                text,
                attachments,
                receipt,
            }));
        }
        let query = update.get("callback_query")?;
        let from = query.get("from")?;
        if from.get("is_bot").and_then(Value::as_bool).unwrap_or(false) {
            return None;
        }
        let message = query.get("message");
        Some(Event::Press(Pressed {
            data: query
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            user: id_text(from.get("id"))?,
            chat: id_text(
                message
                    .and_then(|m| m.get("chat"))
                    .and_then(|c| c.get("id")),
            )
            .unwrap_or_default(),
            message_id: id_text(message.and_then(|m| m.get("message_id"))).unwrap_or_default(),
            text: message
                .and_then(|m| m.get("text"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            handle: query.get("id").and_then(Value::as_str)?.to_owned(),
            receipt,
        }))
    }
}

impl Platform for Updates {
    fn poll(&mut self, wait: Duration) -> Result<Vec<Event>, ToolFailure> {
        let updates = self.api.call(
            "getUpdates",
            &json!({
                "offset": self.offset,
                "timeout": wait.as_secs().min(50),
                "allowed_updates": ["message", "callback_query"],
            }),
        )?;
        let mut events = Vec::new();
        for update in updates.as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(update_id) = update.get("update_id").and_then(Value::as_i64) else {
                continue;
            };
            if update_id < self.offset {
                continue;
            }
            match self.event(update, update_id) {
                Some(event) => events.push(event),
                // Nothing for the kernel: skipped at once when nothing waits before it, else
                // it comes again after the events before it are acknowledged.
                None if events.is_empty() => self.offset = update_id.saturating_add(1),
                None => {}
            }
        }
        Ok(events)
    }

    fn ack(&mut self, event: &Event) -> Result<(), ToolFailure> {
        if let Ok(id) = event.receipt().parse::<i64>() {
            self.offset = self.offset.max(id.saturating_add(1));
        }
        Ok(())
    }
}

impl Poster for Api {
    fn text_limit(&self) -> usize {
        TEXT_LIMIT
    }

    fn send(&self, chat: &str, text: &str) -> Result<String, ToolFailure> {
        self.send_text(chat, text, None)
    }

    fn edit(&self, chat: &str, message_id: &str, text: &str) -> Result<(), ToolFailure> {
        let message_id: i64 = message_id.parse().map_err(|_| {
            ToolFailure::invalid(format!("`{message_id}` is no Telegram message id"))
        })?;
        // Without `reply_markup`, the inline keyboard goes.
        match self.call(
            "editMessageText",
            &json!({
                "chat_id": chat_id(chat),
                "message_id": message_id,
                "text": text,
                "link_preview_options": {"is_disabled": true},
            }),
        ) {
            Err(f) if f.kind == ErrorKind::Invalid && f.message.contains("not modified") => Ok(()),
            other => other.map(drop),
        }
    }

    fn announce(
        &self,
        user: &str,
        text: &str,
        buttons: &[Button],
        link: Option<&str>,
    ) -> Result<Posted, ToolFailure> {
        let mut rows = Vec::new();
        if !buttons.is_empty() {
            rows.push(
                buttons
                    .iter()
                    .map(|b| json!({"text": b.label, "callback_data": b.data}))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(link) = link {
            rows.push(vec![json!({"text": "Open the console", "url": link})]);
        }
        let markup = (!rows.is_empty()).then(|| json!({ "inline_keyboard": rows }));
        let message_id = self.send_text(user, text, markup)?;
        Ok(Posted {
            chat: user.to_owned(),
            message_id,
        })
    }

    fn answer_press(
        &self,
        press: &Pressed,
        message: &str,
        edit: Option<&str>,
    ) -> Result<(), ToolFailure> {
        let short: String = message.chars().take(ANSWER_LIMIT).collect();
        // Answered at most once: when a retry comes for the edit below, Telegram refuses the
        // second answer, which does not matter.
        if let Err(f) = self.call(
            "answerCallbackQuery",
            &json!({"callback_query_id": press.handle, "text": short}),
        ) {
            if f.kind == ErrorKind::RateLimited {
                return Err(f);
            }
            self.log
                .line(&format!("cannot answer a button press: {}", f.message));
        }
        match edit {
            Some(text) if !press.chat.is_empty() && !press.message_id.is_empty() => {
                self.edit(&press.chat, &press.message_id, text)
            }
            _ => Ok(()),
        }
    }
}
