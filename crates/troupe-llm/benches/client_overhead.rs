//! What Troupe's client adds to an LLM call: the same chat completion sent
//! through [`OpenAiClient`] and as a bare HTTP request (reqwest, pre-encoded
//! body, response read as bytes), against one fake server on loopback, in the
//! same run, interleaved. Prints JSON with the latency percentiles of both and
//! their differences.
//!
//! `cargo bench -p troupe-llm --bench client_overhead` (set `BENCH_CALLS` to
//! change the 20,000 calls per path).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use troupe_core::llm::{CallKind, ChatMessage, ChatRequest, LlmProvider as _};
use troupe_llm::{OpenAiClient, OpenAiConfig};

/// A minimal HTTP/1.1 keep-alive server that answers every request with `body`.
async fn fake_server(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let response: Vec<u8> = [head.as_bytes(), &body].concat();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            let response = response.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.to_ascii_lowercase();
                        if let Some(v) = l.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut request_body = vec![0; length];
                    reader.read_exact(&mut request_body).await.unwrap();
                    write.write_all(&response).await.unwrap();
                }
            });
        }
    });
    format!("http://{addr}/v1")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summary(mut d: Vec<Duration>) -> serde_json::Value {
    d.sort();
    let mean = d.iter().sum::<Duration>().as_secs_f64() * 1000.0 / d.len() as f64;
    json!({
        "mean_ms": mean,
        "p50_ms": percentile(&d, 0.50),
        "p90_ms": percentile(&d, 0.90),
        "p99_ms": percentile(&d, 0.99),
        "max_ms": percentile(&d, 1.0),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // A reply of about 1 KB, with usage, as a worker would get.
    let reply = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "fake",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "The figures show growth. ".repeat(40)}}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 250, "total_tokens": 1450}
    });
    let base = fake_server(serde_json::to_vec(&reply).unwrap()).await;

    // A request of about 5 KB: a system prompt and a subtask with dependency results.
    let request = ChatRequest::new(
        CallKind::Work,
        vec![
            ChatMessage::system("You are a careful data analyst. ".repeat(30)),
            ChatMessage::user("Results of the subtasks yours depends on: 42 units. ".repeat(80)),
        ],
    );
    let client =
        OpenAiClient::new(OpenAiConfig::new(&base, "fake").with_api_key("sk-bench")).unwrap();
    let bare = reqwest::Client::new();
    let url = format!("{base}/chat/completions");
    let body = serde_json::to_vec(&json!({
        "model": "fake", "messages": request.messages, "stream": false
    }))
    .unwrap();

    let mut through_client = Vec::with_capacity(calls);
    let mut through_bare = Vec::with_capacity(calls);
    let warmup = calls / 10;
    for i in 0..calls + warmup {
        let order = i % 2 == 0;
        for first in [order, !order] {
            let started = Instant::now();
            if first {
                let r = client.complete(request.clone()).await.unwrap();
                assert_eq!(r.usage.prompt_tokens, 1200);
                if i >= warmup {
                    through_client.push(started.elapsed());
                }
            } else {
                let r = bare
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sk-bench")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let bytes = r.bytes().await.unwrap();
                assert!(!bytes.is_empty());
                if i >= warmup {
                    through_bare.push(started.elapsed());
                }
            }
        }
    }
    let client_stats = summary(through_client);
    let bare_stats = summary(through_bare);
    let diff = |k: &str| client_stats[k].as_f64().unwrap() - bare_stats[k].as_f64().unwrap();
    let out = json!({
        "calls_per_path": calls,
        "troupe_client": client_stats,
        "bare_http": bare_stats,
        "overhead_ms": {
            "mean": diff("mean_ms"),
            "p50": diff("p50_ms"),
            "p90": diff("p90_ms"),
            "p99": diff("p99_ms"),
        }
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
