//! `http-client.send` over `wasi:http/outgoing-handler`. Spin checks every
//! request against the component's `allowed_outbound_hosts` and answers
//! `HTTP-request-denied` for the rest, which becomes `http-error.denied`.

use url::{Position, Url};
use wasi::http::outgoing_handler;
use wasi::http::types::{ErrorCode, Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};

use crate::Services;
use crate::bindings::exports::edgeproxy::platform::http_client::{self, HttpError, SendOptions};
use crate::bindings::exports::edgeproxy::platform::types::{Request, Response};
use crate::bodies::{HostBody, Source, WasiStream};

/// `send-options.timeout-ms` when the core gives none: 30 s, as on every host (wit/edgeproxy.wit).
const DEFAULT_TIMEOUT_MS: u32 = 30_000;

impl http_client::Guest for Services {
    fn send(request: Request, options: SendOptions) -> Result<Response, HttpError> {
        let url = Url::parse(&request.url).map_err(|e| HttpError::InvalidUrl(format!("{}: {e}", request.url)))?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(HttpError::InvalidUrl(format!("unsupported scheme {other}"))),
        };
        let host = url.host_str().ok_or_else(|| HttpError::InvalidUrl(format!("{}: no host", request.url)))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let is_head = request.method.eq_ignore_ascii_case("HEAD");

        let headers = Fields::new();
        for (name, value) in &request.headers {
            // Headers wasi:http forbids a guest to set (host, connection,
            // ...) are the host's to write; skipping them is correct.
            let _ = headers.append(name, &value.as_bytes().to_vec());
        }
        let outgoing = OutgoingRequest::new(headers);
        let invalid = |what: &str| HttpError::InvalidUrl(format!("{}: invalid {what}", request.url));
        outgoing.set_method(&method(&request.method)).map_err(|()| invalid("method"))?;
        outgoing.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
        outgoing.set_authority(Some(&authority)).map_err(|()| invalid("authority"))?;
        outgoing.set_path_with_query(Some(&url[Position::BeforePath..Position::AfterQuery])).map_err(|()| invalid("path"))?;
        let outgoing_body = outgoing.body().map_err(|()| HttpError::ProtocolError("request body already taken".into()))?;

        let request_options = RequestOptions::new();
        let nanos = u64::from(options.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)) * 1_000_000;
        let _ = request_options.set_connect_timeout(Some(nanos));
        let _ = request_options.set_first_byte_timeout(Some(nanos));
        let pending = outgoing_handler::handle(outgoing, Some(request_options)).map_err(http_error)?;

        let upload = match request.body {
            Some(body) => match outgoing_body.write() {
                Ok(stream) => {
                    let piped = HostBody::into_source(body).pipe(&stream);
                    drop(stream);
                    piped.map_err(|e| format!("{e:?}"))
                }
                Err(()) => Err("the request body stream was already taken".to_owned()),
            },
            None => Ok(()),
        };
        let upload = match upload {
            Ok(()) => OutgoingBody::finish(outgoing_body, None).map_err(|code| format!("{code:?}")),
            // Dropped unfinished: the host aborts the upload.
            Err(why) => Err(why),
        };

        // Even after a failed upload the upstream may have answered (a 413
        // before reading everything): its answer is what the client should see.
        let response = loop {
            match pending.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(code))) => {
                    return Err(match upload {
                        Err(why) => HttpError::ProtocolError(format!("request body: {why}")),
                        Ok(()) => http_error(code),
                    });
                }
                Some(Err(())) => return Err(HttpError::ProtocolError("response already taken".into())),
                None => pending.subscribe().block(),
            }
        };
        into_response(response, is_head)
    }
}

fn into_response(response: IncomingResponse, is_head: bool) -> Result<Response, HttpError> {
    let status = response.status();
    let headers: Vec<(String, String)> = {
        let fields = response.headers();
        fields.entries().into_iter().map(|(name, value)| (name.to_ascii_lowercase(), String::from_utf8_lossy(&value).into_owned())).collect()
    };
    let bodiless = is_head || status == 204 || status == 304 || (100..200).contains(&status);
    if bodiless {
        return Ok(Response { status, headers, body: None });
    }
    let known_length = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.trim().parse().ok());
    let body = response.consume().map_err(|()| HttpError::ProtocolError("response body already taken".into()))?;
    let stream = WasiStream::new(body, Some(response), known_length)
        .ok_or_else(|| HttpError::ProtocolError("response body stream already taken".into()))?;
    Ok(Response { status, headers, body: Some(HostBody::from_source(Source::Stream(stream))) })
}

fn method(name: &str) -> Method {
    match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        _ => Method::Other(name.to_owned()),
    }
}

fn http_error(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => HttpError::Denied(format!("{code:?}")),
        ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestMethodInvalid => HttpError::InvalidUrl(format!("{code:?}")),
        ErrorCode::DnsTimeout | ErrorCode::DnsError(_) | ErrorCode::DestinationNotFound => HttpError::DnsError(format!("{code:?}")),
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => HttpError::Timeout,
        ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable => HttpError::ConnectionFailed(format!("{code:?}")),
        ErrorCode::TlsProtocolError | ErrorCode::TlsCertificateError | ErrorCode::TlsAlertReceived(_) => HttpError::TlsError(format!("{code:?}")),
        other => HttpError::ProtocolError(format!("{other:?}")),
    }
}
