//! Publishing a log subscription: the output of some of this node's task containers, merged,
//! sent to the manager in batches; ends when every container's output has been read (or, when
//! following, when the subscription is closed).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use orch_api::pb::dispatcher_client::DispatcherClient;
use orch_api::pb::{LogBatch, LogMessage, LogSubscription, Task};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::debug;

use crate::exec::{Executor, LogOptions};

const BATCH_LINES: usize = 256;
const LINGER: Duration = Duration::from_millis(20);

pub async fn publish(
    channel: Channel,
    exec: Arc<dyn Executor>,
    tasks: Vec<Task>,
    sub: LogSubscription,
    cancel: CancellationToken,
) {
    let options = LogOptions {
        follow: sub.follow,
        tail: u64::try_from(sub.tail).ok(),
        since: sub.since,
        timestamps: sub.timestamps,
    };
    let mut streams = Vec::new();
    for task in tasks {
        match exec.logs(&task, options.clone()).await {
            Ok(s) => {
                let task = task.clone();
                streams.push(s.map(move |line| (task.clone(), line)).boxed());
            }
            Err(e) => debug!(task = %task.id, error = %e, "no logs for task"),
        }
    }
    let (tx, rx) = mpsc::channel::<LogBatch>(16);
    let mut client = DispatcherClient::new(channel).max_encoding_message_size(64 << 20);
    let call = tokio::spawn(async move { client.publish_logs(ReceiverStream::new(rx)).await });
    let mut merged = futures::stream::select_all(streams);
    let mut batch: Vec<LogMessage> = Vec::new();
    let id = sub.id.clone();
    let flush = |batch: &mut Vec<LogMessage>, done: bool| LogBatch {
        subscription_id: id.clone(),
        messages: std::mem::take(batch),
        done,
    };
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            next = tokio::time::timeout(LINGER, merged.next()), if !merged.is_empty() => next,
            _ = tokio::time::sleep(LINGER), if merged.is_empty() => Ok(None),
        };
        match next {
            Ok(Some((task, Ok(line)))) => {
                batch.push(LogMessage {
                    task_id: task.id.clone(),
                    node_id: String::new(),
                    service_name: task.service_name.clone(),
                    slot: task.slot,
                    timestamp: line.timestamp,
                    stream: line.stream,
                    data: line.data,
                });
                if batch.len() >= BATCH_LINES && tx.send(flush(&mut batch, false)).await.is_err() {
                    return;
                }
            }
            Ok(Some((task, Err(e)))) => debug!(task = %task.id, error = %e, "log stream error"),
            Ok(None) => {
                // Every stream has ended.
                let _ = tx.send(flush(&mut batch, true)).await;
                break;
            }
            Err(_) => {
                if !batch.is_empty() && tx.send(flush(&mut batch, false)).await.is_err() {
                    return;
                }
            }
        }
    }
    drop(tx);
    let _ = call.await;
}
