//! Work-arounds for where jsonrpsee reads or answers JSON-RPC 2.0 differently from the contract,
//! in one place, each with its unit tests: ids it cannot hold (numbers beyond u64, which it
//! would take for notifications), ids JSON-RPC forbids, the by-name params of
//! `opportunity.unsubscribe`, an unsubscribe that arrives before jsonrpsee registered the
//! subscription it answered, and the probe that finds the error objects jsonrpsee made itself
//! (the rewriting into §4's shape is `error::normalize_error_value`). The HTTP edge (`http.rs`)
//! and the WebSocket relay (`ws.rs`) apply them on the way in and out; the RPC middleware
//! (`rpc/mod.rs`) the two about unsubscribing.

use hyper::body::Bytes;

/// The `id` of a request, as written.
#[derive(serde::Deserialize)]
struct IdProbe<'a> {
    #[serde(borrow, default)]
    id: Option<&'a serde_json::value::RawValue>,
}

/// An id jsonrpsee cannot hold, swapped for a string placeholder on the way in and back on the
/// way out.
pub struct IdSwap {
    pub placeholder: String,
    pub original: String,
}

pub enum Swapped {
    Unchanged,
    Body(Bytes, Vec<IdSwap>),
    /// A single request that is refused: its id is of a type JSON-RPC forbids, or a member
    /// appears twice; the message says which.
    Invalid(&'static str),
}

/// Why a single request is refused before it runs.
pub const BAD_ID: &str =
    "the id must be one string (of valid text: no lone surrogate escape such as \\ud800), number or null";
pub const DUPLICATE_MEMBER: &str = "a member of the request appears twice";

/// jsonrpsee reads numeric ids only as u64, and takes a request whose id it cannot read for a
/// notification. Numeric ids it cannot hold, and string ids written with escapes, are swapped for
/// unique string placeholders (put back in the answer as written); batch items whose id is
/// neither a string, a number nor null are swapped for `0`, which jsonrpsee answers as an
/// invalid request.
pub fn swap_unsupported_ids(body: &Bytes) -> Swapped {
    use serde_json::value::RawValue;
    let forbidden = |id: &RawValue| id.get().starts_with(['{', '[', 't', 'f']);
    // Numbers it cannot hold, and strings written with an escape (`"a\u0041"`), which it would
    // echo as read (`"aA"`), not as written (CONTRACT.md §2).
    let unsupported = |id: &RawValue| {
        let text = id.get();
        match text.starts_with('"') {
            true => text.contains('\\') && serde_json::from_str::<String>(text).is_ok(),
            false => text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) && text.parse::<u64>().is_err(),
        }
    };
    let is_batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    // (span to replace, replacement, swap to undo)
    let mut edits: Vec<(&[u8], String, Option<IdSwap>)> = Vec::new();
    // A single request is probed in one pass over the body; a batch item by item.
    let probes: Vec<(&[u8], Result<IdProbe<'_>, serde_json::Error>)> = if is_batch {
        match serde_json::from_slice::<Vec<&RawValue>>(body) {
            Ok(items) => {
                items.into_iter().map(|item| (item.get().as_bytes(), serde_json::from_str(item.get()))).collect()
            }
            Err(_) => return Swapped::Unchanged,
        }
    } else {
        vec![(body.trim_ascii(), serde_json::from_slice(body))]
    };
    for (item, probe) in probes {
        let id = match probe {
            Ok(IdProbe { id: Some(id) }) => id,
            Ok(IdProbe { id: None }) => continue,
            // jsonrpsee would take a request whose id it cannot read (`"id"` twice, say) for a
            // notification; in a batch it answers such an entry as an invalid request itself.
            // (A body that is not JSON as a whole stays a parse error.)
            Err(e)
                if !is_batch
                    && item.starts_with(b"{")
                    && e.to_string().contains("duplicate field")
                    && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() =>
            {
                return Swapped::Invalid(DUPLICATE_MEMBER);
            }
            Err(_) => continue,
        };
        // `id` borrows from `item`, which borrows from `body`.
        if !is_batch && id.get().starts_with('"') && serde_json::from_str::<String>(id.get()).is_err() {
            return Swapped::Invalid(BAD_ID); // a string id that is not valid text (a lone surrogate)
        }
        if forbidden(id) {
            if !is_batch {
                return Swapped::Invalid(BAD_ID);
            }
            edits.push((item, "0".to_string(), None));
        } else if unsupported(id) {
            let placeholder = format!("\"opportunity-service-id-{}\"", uuid::Uuid::new_v4().simple());
            let swap = IdSwap { placeholder: placeholder.clone(), original: id.get().to_string() };
            edits.push((id.get().as_bytes(), placeholder, Some(swap)));
        }
    }
    if edits.is_empty() {
        return Swapped::Unchanged;
    }
    let mut out = Vec::with_capacity(body.len() + edits.len() * 48);
    let mut swaps = Vec::new();
    let mut copied = 0;
    for (span, replacement, swap) in edits {
        let start = span.as_ptr() as usize - body.as_ptr() as usize;
        out.extend_from_slice(&body[copied..start]);
        out.extend_from_slice(replacement.as_bytes());
        copied = start + span.len();
        swaps.extend(swap);
    }
    out.extend_from_slice(&body[copied..]);
    Swapped::Body(Bytes::from(out), swaps)
}

/// Whether a JSON-RPC answer (or batch of answers) holds an error object without `data`.
pub fn has_raw_error(bytes: &[u8]) -> bool {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow, default)]
        error: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Error<'a> {
        #[serde(borrow, default)]
        data: Option<&'a RawValue>,
    }
    let raw = |answer: &Answer<'_>| {
        answer.error.is_some_and(|e| serde_json::from_str::<Error<'_>>(e.get()).map_or(true, |e| e.data.is_none()))
    };
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice::<Vec<Answer<'_>>>(bytes).map_or(true, |items| items.iter().any(raw)),
        _ => serde_json::from_slice::<Answer<'_>>(bytes).map_or(true, |answer| raw(&answer)),
    }
}

/// The params of `opportunity.unsubscribe` as jsonrpsee reads them (`[id]`), from any form the
/// API takes: `{"subscription": id}`, `[id]`, or that object alone in an array (CONTRACT.md §2).
/// Anything else is refused in §4's shape, every problem at once, by the reader every method's
/// params go through: jsonrpsee itself answered `false` to params it could not read, so a
/// misspelt or extra member left the subscription running without a word. An id is an integer
/// (however written) or a string (`SubscriptionId`); one that is not of this connection is
/// still answered `false`.
pub fn unsubscribe_params(
    params: Option<std::borrow::Cow<'_, serde_json::value::RawValue>>,
) -> Result<Box<serde_json::value::RawValue>, crate::error::ValidationFailure> {
    use crate::rpc::params::{self, FieldReader};
    use serde_json::value::RawValue;
    let text = params.as_deref().map(RawValue::get);
    let subscription = |raw: &RawValue| -> Result<String, String> {
        let id = match raw.get().starts_with('"') {
            true => params::string(raw).map(serde_json::Value::from).ok(),
            false => params::integer(raw).ok().filter(|n| *n >= 0).map(serde_json::Value::from),
        };
        id.map(|id| id.to_string()).ok_or_else(|| "must be a subscription id (an integer or a string)".into())
    };
    // `[id]`: the one item is the id itself, unless it is the object that names it.
    let positional = text
        .and_then(|t| serde_json::from_str::<[&RawValue; 1]>(t).ok())
        .map(|[item]| item)
        .filter(|item| !item.get().starts_with('{'));
    let id = match positional {
        Some(item) => subscription(item).map_err(|message| {
            let mut failure = crate::error::ValidationFailure::default();
            failure.field("subscription", message);
            failure
        })?,
        None => {
            let mut reader = FieldReader::new(text);
            reader.refuse_unknown(&["subscription"]);
            let id = reader.required("subscription", subscription);
            reader.failure.into_result()?;
            id.expect("no problem, so read")
        }
    };
    Ok(RawValue::from_string(format!("[{id}]")).expect("JSON"))
}

/// The subscriptions of one WebSocket connection being accepted. jsonrpsee answers a subscribe
/// with its id *before* it registers the subscription (`PendingSubscriptionSink::accept`, its
/// TODO #1052): an unsubscribe sent as soon as the id arrives can find nothing, answer `false`
/// and leave the subscription running. [`unsubscribed`] waits for the connection's accepts in
/// progress before it believes a `false`.
pub type AcceptsInProgress = std::sync::Arc<tokio::sync::watch::Sender<usize>>;

/// Counts one accept in progress on its connection until dropped.
#[derive(Debug)]
pub struct Accepting(AcceptsInProgress);

impl Accepting {
    pub fn start(accepts: &AcceptsInProgress) -> Self {
        accepts.send_modify(|n| *n += 1);
        Self(accepts.clone())
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// How long an unsubscribe waits, at most, for the accepts in progress on its connection. An
/// accept is one send to the connection's own queue: it takes microseconds, unless that queue is
/// full (the peer does not read) or the machine is starved; only then does the wait last.
const ACCEPT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether an answer of `opportunity.unsubscribe` is `false` (no such subscription).
fn answered_false(response: &jsonrpsee::server::middleware::rpc::MethodResponse) -> bool {
    #[derive(serde::Deserialize)]
    struct Answer {
        result: Option<bool>,
    }
    serde_json::from_str::<Answer>(response.as_json().get()).is_ok_and(|a| a.result == Some(false))
}

/// Runs an `opportunity.unsubscribe` through `inner`; when it finds no subscription, waits for
/// the accepts in progress on the same connection and asks once more, so that an id is never
/// refused for arriving before jsonrpsee registered it.
///
/// It asks again even when no accept is in progress any more: the accept may have ended
/// between the first answer and the look at the count, and a subscription is registered by
/// the time its accept ends. (Skipping the second call then answered `false` in one round of
/// a hundred under CI's load.) For an id that is truly unknown, the second call is one more
/// look-up in the connection's table.
pub async fn unsubscribed<S>(
    inner: &S,
    request: jsonrpsee::types::Request<'_>,
    accepts: &AcceptsInProgress,
) -> jsonrpsee::server::middleware::rpc::MethodResponse
where
    S: jsonrpsee::core::middleware::RpcServiceT<MethodResponse = jsonrpsee::server::middleware::rpc::MethodResponse>,
{
    let again = request.clone();
    let response = inner.call(request).await;
    if !answered_false(&response) {
        return response;
    }
    let mut count = accepts.subscribe();
    let _ = tokio::time::timeout(ACCEPT_WAIT, count.wait_for(|n| *n == 0)).await;
    inner.call(again).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swap(body: &str) -> Swapped {
        swap_unsupported_ids(&Bytes::from(body.to_string()))
    }

    #[test]
    fn ids_jsonrpsee_holds_pass_unchanged() {
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","method":"m"}"#,
            r#"[{"jsonrpc":"2.0","id":18446744073709551615,"method":"m"}]"#,
            "not json",
        ] {
            assert!(matches!(swap(body), Swapped::Unchanged), "{body}");
        }
    }

    #[test]
    fn numbers_beyond_u64_are_swapped_and_given_back() {
        let Swapped::Body(body, swaps) = swap(r#"{"jsonrpc":"2.0","id":-1.5e3,"method":"m"}"#) else {
            panic!("a negative, fractional id is swapped");
        };
        assert_eq!(swaps.len(), 1);
        assert_eq!(swaps[0].original, "-1.5e3");
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains(&swaps[0].placeholder), "{text}");
        let Swapped::Body(_, swaps) = swap(r#"[{"jsonrpc":"2.0","id":1,"method":"m"},{"id":99999999999999999999}]"#)
        else {
            panic!("a batch item with a huge id is swapped");
        };
        assert_eq!(swaps.len(), 1);
        assert_eq!(swaps[0].original, "99999999999999999999");
    }

    #[test]
    fn strings_written_with_escapes_are_swapped_and_given_back_as_written() {
        let Swapped::Body(body, swaps) = swap(r#"{"jsonrpc":"2.0","id":"a\u0041\n","method":"m"}"#) else {
            panic!("an id with escapes is swapped");
        };
        assert_eq!(swaps.len(), 1);
        assert_eq!(swaps[0].original, r#""a\u0041\n""#);
        assert!(String::from_utf8(body.to_vec()).unwrap().contains(&swaps[0].placeholder));
        // A string that is not valid text stays as it is: refused alone, invalid in a batch.
        assert!(matches!(swap(r#"{"jsonrpc":"2.0","id":"\ud800","method":"m"}"#), Swapped::Invalid(BAD_ID)));
        assert!(matches!(swap(r#"[{"jsonrpc":"2.0","id":"\ud800","method":"m"}]"#), Swapped::Unchanged));
    }

    #[test]
    fn forbidden_ids_are_invalid_alone_and_zero_in_a_batch() {
        for (body, why) in [
            (r#"{"jsonrpc":"2.0","id":{"a":1},"method":"m"}"#, BAD_ID),
            (r#"{"jsonrpc":"2.0","id":[1],"method":"m"}"#, BAD_ID),
            (r#"{"jsonrpc":"2.0","id":true,"method":"m"}"#, BAD_ID),
            (r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"m"}"#, DUPLICATE_MEMBER),
        ] {
            assert!(matches!(swap(body), Swapped::Invalid(w) if w == why), "{body}");
        }
        let Swapped::Body(body, swaps) = swap(r#"[{"jsonrpc":"2.0","id":false,"method":"m"},{"id":2}]"#) else {
            panic!("a batch item with a boolean id is rewritten");
        };
        assert!(swaps.is_empty(), "nothing to give back: the item is answered as an invalid request");
        assert_eq!(&body[..], br#"[0,{"id":2}]"#, "the item becomes 0, the others stay");
    }

    #[test]
    fn raw_errors_are_those_without_data() {
        assert!(has_raw_error(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"m"}}"#));
        assert!(!has_raw_error(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"m","data":{}}}"#));
        assert!(!has_raw_error(br#"{"jsonrpc":"2.0","id":1,"result":{"error":{"code":1}}}"#));
        assert!(has_raw_error(br#"[{"jsonrpc":"2.0","id":1,"result":1},{"jsonrpc":"2.0","id":2,"error":{"code":1}}]"#));
        assert!(!has_raw_error(br#"[{"jsonrpc":"2.0","id":1,"result":1}]"#));
    }

    #[test]
    fn only_a_false_result_is_answered_false() {
        use jsonrpsee::ResponsePayload;
        use jsonrpsee::server::middleware::rpc::MethodResponse;
        use jsonrpsee::types::{ErrorObject, Id};
        let answer = |result: bool| MethodResponse::response(Id::Number(1), ResponsePayload::success(result), 1 << 20);
        assert!(answered_false(&answer(false)));
        assert!(!answered_false(&answer(true)));
        let error = MethodResponse::error(Id::Number(1), ErrorObject::owned(-32602, "bad", None::<()>));
        assert!(!answered_false(&error));
    }

    #[test]
    fn unsubscribe_takes_the_subscription_by_name_or_position_and_refuses_anything_else() {
        let read = |text: Option<&str>| {
            unsubscribe_params(
                text.map(|t| std::borrow::Cow::Owned(serde_json::value::RawValue::from_string(t.into()).unwrap())),
            )
            .map(|raw| raw.get().to_string())
        };
        for accepted in [r#"{"subscription":"abc"}"#, r#"["abc"]"#, r#"[{"subscription":"abc"}]"#] {
            assert_eq!(read(Some(accepted)).unwrap(), r#"["abc"]"#, "{accepted}");
        }
        for seventeen in [r#"{"subscription":17}"#, "[17.0]", "[1.7e1]"] {
            assert_eq!(read(Some(seventeen)).unwrap(), "[17]", "{seventeen}");
        }
        let refused = |text: Option<&str>| read(text).expect_err(text.unwrap_or("no params"));
        let failure = refused(Some(r#"{"subscription":17,"x":1}"#));
        assert_eq!(failure.form_errors, [r#"unknown field "x""#]);
        assert!(failure.field_errors.is_empty(), "the id itself is fine: {failure:?}");
        for missing in [None, Some("null"), Some("{}"), Some("[{}]")] {
            assert_eq!(refused(missing).field_errors["subscription"], ["is required"], "{missing:?}");
        }
        for not_an_id in [r#"{"subscription":null}"#, "[-1]", "[1.5]", r#"[{"subscription":[1]}]"#, "[true]"] {
            assert!(refused(Some(not_an_id)).has_field("subscription"), "{not_an_id}");
        }
        for not_one in ["[]", "[1,2]", r#""abc""#, "7"] {
            let failure = refused(Some(not_one));
            assert!(!failure.form_errors.is_empty() || failure.has_field("subscription"), "{not_one}");
        }
    }

    /// The subscription table of one connection, where a subscription's accept ends while the
    /// first look-up of an unsubscribe is under way: that look-up finds nothing, and by the time
    /// the count of accepts is read, it is 0 again.
    struct AcceptEndsDuringTheLookUp {
        accepting: std::sync::Mutex<Option<Accepting>>,
        registered: std::sync::atomic::AtomicBool,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl jsonrpsee::core::middleware::RpcServiceT for AcceptEndsDuringTheLookUp {
        type MethodResponse = jsonrpsee::server::middleware::rpc::MethodResponse;
        type NotificationResponse = Self::MethodResponse;
        type BatchResponse = Self::MethodResponse;

        fn call<'a>(
            &self,
            request: jsonrpsee::types::Request<'a>,
        ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
            use std::sync::atomic::Ordering::SeqCst;
            self.calls.fetch_add(1, SeqCst);
            let found = self.registered.load(SeqCst);
            // The accept registers the subscription and ends, after the look-up.
            self.registered.store(true, SeqCst);
            drop(self.accepting.lock().unwrap().take());
            let answer = jsonrpsee::server::middleware::rpc::MethodResponse::response(
                request.id.into_owned(),
                jsonrpsee::ResponsePayload::success(found),
                1024,
            );
            std::future::ready(answer)
        }

        // Not called by `unsubscribed`.
        fn batch<'a>(
            &self,
            _: jsonrpsee::core::middleware::Batch<'a>,
        ) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
            std::future::pending()
        }

        fn notification<'a>(
            &self,
            _: jsonrpsee::core::middleware::Notification<'a>,
        ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
            std::future::pending()
        }
    }

    #[tokio::test]
    async fn an_unsubscribe_whose_subscription_was_registered_during_its_first_look_up_ends_it() {
        let accepts = AcceptsInProgress::default();
        let table = AcceptEndsDuringTheLookUp {
            accepting: std::sync::Mutex::new(Some(Accepting::start(&accepts))),
            registered: false.into(),
            calls: 0.into(),
        };
        let params = serde_json::value::RawValue::from_string(r#"["sub"]"#.into()).unwrap();
        let request = jsonrpsee::types::Request::owned(
            "opportunity.unsubscribe".into(),
            Some(params),
            jsonrpsee::types::Id::Number(2),
        );
        let response = unsubscribed(&table, request, &accepts).await;
        assert_eq!(response.as_json().get(), r#"{"jsonrpc":"2.0","id":2,"result":true}"#);
        assert_eq!(table.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
