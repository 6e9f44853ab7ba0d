//! Following a run's log while it lasts. The engine's status is read before each log read, so
//! nothing written between the two is missed; after the end a few empty reads go by before the
//! stream ends, because log services store lines a moment after they are written.

use std::sync::Arc;

use brizo_backend_core::BackendError;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::{Meta, RemoteEngine, staging};

/// Empty reads after the run ended before the log counts as complete.
const LINGER_READS: u32 = 3;

struct Follow<E> {
    engine: Arc<E>,
    job_id: String,
    run_id: Option<String>,
    cursor: Option<String>,
    done: bool,
    quiet_after_end: u32,
}

pub(crate) fn follow<E: RemoteEngine>(
    engine: Arc<E>,
    job_id: String,
) -> BoxStream<'static, Result<Bytes, BackendError>> {
    let state = Follow {
        engine,
        job_id,
        run_id: None,
        cursor: None,
        done: false,
        quiet_after_end: 0,
    };
    futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            match next(&mut s).await {
                Err(e) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
                Ok((bytes, ended, advanced)) => {
                    if !bytes.is_empty() {
                        s.quiet_after_end = 0;
                        return Some((Ok(bytes), s));
                    }
                    if ended && !advanced {
                        s.quiet_after_end += 1;
                        if s.quiet_after_end >= LINGER_READS {
                            return None;
                        }
                    }
                    tokio::time::sleep(s.engine.poll()).await;
                }
            }
        }
    })
    .boxed()
}

/// One read: the bytes, whether the run had ended before it, whether the cursor moved.
async fn next<E: RemoteEngine>(s: &mut Follow<E>) -> Result<(Bytes, bool, bool), BackendError> {
    let run_id = match &s.run_id {
        Some(id) => id.clone(),
        None => {
            let Some(meta) =
                staging::get_json::<Meta>(s.engine.staging().as_ref(), &s.job_id, "meta.json")
                    .await?
            else {
                return Err(BackendError::not_found(&s.job_id));
            };
            s.run_id = Some(meta.run_id.clone());
            meta.run_id
        }
    };
    let status = s.engine.status(&run_id).await?;
    let ended = status.is_over();
    let read = s
        .engine
        .read_log(&s.job_id, &run_id, &status, s.cursor.clone())
        .await?;
    let advanced = read.cursor.is_some() && read.cursor != s.cursor;
    if read.cursor.is_some() {
        s.cursor = read.cursor;
    }
    Ok((read.bytes, ended, advanced))
}
