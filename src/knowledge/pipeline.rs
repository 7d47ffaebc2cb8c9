//! The ingestion pipeline and the other knowledge jobs. Runs on job worker threads.

use super::{
    Error, JOB_PROCESS, JOB_REEMBED, JOB_TRAIN, JOB_UNINDEX, Knowledge, Space, UNINDEX_ATTEMPTS,
};
use crate::auth::{Action, Caller};
use crate::domain::plans::{Crossings, Limit};
use crate::index::{TextDoc, VectorIndex};
use crate::ingest;
use crate::jobs::{Class, JobCtx, JobError, Jobs, Policy};
use crate::model::*;
use crate::store::chunk_key;
use crate::store::{self, Index, WriteTx, make_ref};
use crate::types::*;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The permission check of the document entry points, worded by the domain.
fn require(caller: &Caller, action: Action) -> Result<(), Error> {
    caller
        .require(action)
        .map_err(|d| crate::domain::Error::denied(d, "document").into())
}

/// Texts per embedding call: small enough to report progress often.
const EMBED_BATCH: usize = 32;

pub fn text_doc(c: &Chunk, agents: &[AgentId]) -> TextDoc {
    TextDoc {
        tenant: c.tenant_id.clone(),
        document: c.document_id.clone(),
        chunk: c.id.clone(),
        agents: agents.to_vec(),
        text: c.text.clone(),
        headings: c.headings.clone(),
    }
}

/// Writes chunks and their vectors (those that have one) in the caller's transaction: what
/// processing stores for a document besides its record (the benchmarks store theirs with it).
pub fn put_chunks<'v>(
    tx: &WriteTx,
    chunks: &[Chunk],
    vectors: impl IntoIterator<Item = Option<&'v [f32]>>,
) -> store::Result<()> {
    for (c, v) in chunks.iter().zip(vectors) {
        tx.put(c)?;
        if let Some(v) = v {
            tx.put_vector(c, v)?;
        }
    }
    Ok(())
}

/// The vector half of [`Knowledge::index_chunks`]: the chunks that have a vector replace
/// what `index` held of the document (the benchmarks time it on its own).
pub fn index_vectors(
    index: &VectorIndex,
    t: &TenantId,
    id: &DocumentId,
    chunks: &[Chunk],
    vectors: Vec<Option<Vec<f32>>>,
) -> Result<(), Error> {
    index.delete_document(t, id)?;
    let items: Vec<_> = chunks
        .iter()
        .zip(vectors)
        .filter_map(|(c, v)| Some((c.id.clone(), c.document_id.clone(), v?)))
        .collect();
    index.insert(t, &items)?;
    Ok(())
}

fn failed(e: impl std::fmt::Display) -> JobError {
    JobError::Failed(e.to_string().into())
}

impl Knowledge {
    /// Registers the knowledge job handlers.
    pub fn register_jobs(self: &Arc<Self>, jobs: &Jobs) {
        let k = self.clone();
        jobs.register(JOB_PROCESS, Arc::new(move |ctx| k.process_job(ctx)));
        let k = self.clone();
        jobs.register(
            &format!("{JOB_PROCESS}#failed"),
            Arc::new(move |ctx| {
                k.mark_failed_from_job(ctx);
                Ok(())
            }),
        );
        let k = self.clone();
        jobs.register(JOB_REEMBED, Arc::new(move |ctx| k.reembed_job(ctx)));
        let k = self.clone();
        jobs.register(JOB_TRAIN, Arc::new(move |ctx| k.train_job(ctx)));
        let k = self.clone();
        jobs.register_with(
            JOB_UNINDEX,
            Policy {
                class: Class::Background,
                max_attempts: UNINDEX_ATTEMPTS,
            },
            Arc::new(move |ctx| k.unindex_job(ctx)),
        );
    }

    /// Removes what the indexes still hold of a deleted document: nothing when the delete
    /// itself got through to them (the usual case), its chunks when the indexes could not
    /// be written then (a full disk, a crash right after the store's commit).
    fn unindex_job(&self, ctx: &JobCtx) -> Result<(), JobError> {
        let Some(id) = Self::doc_of(ctx) else {
            return Err(JobError::Final("the job names no document".into()));
        };
        let t = &ctx.job.tenant_id;
        let left = self.text.document_chunks(t, &id).map_err(failed)?;
        if left > 0 {
            tracing::info!(tenant = %t, document = %id, chunks = left, "removing a deleted document's chunks the keyword index still held");
            self.text.delete_document(t, &id).map_err(failed)?;
        }
        // In memory (a document the index does not hold costs a map lookup); the vector
        // index persists on its own schedule.
        for space in self.spaces() {
            space.index.delete_document(t, &id).map_err(failed)?;
        }
        Ok(())
    }

    fn doc_of(ctx: &JobCtx) -> Option<DocumentId> {
        ctx.job
            .payload
            .get("documentId")
            .and_then(|v| v.as_str())
            .and_then(DocumentId::parse)
    }

    /// The job gave up outside its handler (crashes): the document shows why.
    fn mark_failed_from_job(&self, ctx: &JobCtx) {
        if let Some(id) = Self::doc_of(ctx) {
            let reason = ctx
                .job
                .error
                .clone()
                .unwrap_or_else(|| "processing failed".into());
            let _ = self.set_status(
                &ctx.job.tenant_id,
                &id,
                DocumentStatus::Failed,
                0,
                Some(reason),
            );
        }
    }

    /// Sets a document's status, progress and error, then tells subscribers; `false` when
    /// the tenant has no such document (deleted meanwhile).
    fn set_status(
        &self,
        t: &TenantId,
        id: &DocumentId,
        status: DocumentStatus,
        progress: u8,
        error: Option<String>,
    ) -> Result<bool, Error> {
        let found = self.set_status_with(t, id, status, progress, error, |_, _| Ok(()))?;
        Ok(found.is_some())
    }

    /// [`set_status`](Self::set_status) with `more`: what else the change writes in the
    /// same commit (other fields of the document, its chunks, a job), run after the status
    /// is set and before the document is put back. `None` when the tenant has no such
    /// document; `more` then does not run.
    fn set_status_with<R>(
        &self,
        t: &TenantId,
        id: &DocumentId,
        status: DocumentStatus,
        progress: u8,
        error: Option<String>,
        more: impl FnOnce(&WriteTx, &mut Document) -> Result<R, store::Error>,
    ) -> Result<Option<R>, Error> {
        let out = self.svc.store.write(|tx| {
            let Some(mut d) = tx.get::<Document>(t, id.as_str())? else {
                return Ok::<_, store::Error>(None);
            };
            d.status = status;
            d.progress = progress;
            d.error = error.clone();
            d.updated_at = now();
            let r = more(tx, &mut d)?;
            tx.put(&d)?;
            Ok(Some(r))
        })?;
        if out.is_some() {
            self.publish_status(t, id, status, progress, error);
        }
        Ok(out)
    }

    /// Tells subscribers (the live documents list) after a status or progress commit.
    fn publish_status(
        &self,
        t: &TenantId,
        id: &DocumentId,
        status: DocumentStatus,
        progress: u8,
        error: Option<String>,
    ) {
        self.svc
            .events
            .publish(crate::events::Event::DocumentStatus {
                tenant_id: t.clone(),
                document_id: id.clone(),
                status,
                progress,
                error,
            });
    }

    fn process_job(&self, ctx: &JobCtx) -> Result<(), JobError> {
        let Some(id) = Self::doc_of(ctx) else {
            return Err(JobError::Failed("the job names no document".into()));
        };
        let t = ctx.job.tenant_id.clone();
        match self.process_document(ctx, &t, &id) {
            Ok(()) => Ok(()),
            Err(JobError::Failed(f) | JobError::RetryAfter(f, _) | JobError::Final(f)) => {
                let _ = self.set_status(&t, &id, DocumentStatus::Failed, 0, Some(f.reason.clone()));
                Err(JobError::Failed(f))
            }
            Err(JobError::Interrupted) => {
                let _ = self.set_status(&t, &id, DocumentStatus::Queued, 0, None);
                Err(JobError::Interrupted)
            }
        }
    }

    /// Parse, chunk, embed, store and index one document.
    pub(crate) fn process_document(
        &self,
        ctx: &JobCtx,
        t: &TenantId,
        id: &DocumentId,
    ) -> Result<(), JobError> {
        let store = &self.svc.store;
        let Some(doc) = store
            .read(|tx| tx.get::<Document>(t, id.as_str()))
            .map_err(failed)?
        else {
            // Deleted before we got to it. A run of this job that the server stopped during
            // may have indexed it after the delete's own unindex job ran.
            if ctx.job.attempts > 1 {
                self.unindex_deleted(t, id).map_err(failed)?;
            }
            return Ok(());
        };
        if !self
            .set_status(t, id, DocumentStatus::Processing, 5, None)
            .map_err(failed)?
        {
            return Ok(());
        }
        let path = self.files_dir(t).join(&doc.sha256);
        let bytes = std::fs::read(&path)
            .map_err(|e| failed(format!("the original file could not be read: {e}")))?;
        let kind = ingest::detect(&bytes, &doc.name, Some(&doc.mime_type)).map_err(failed)?;
        let parsed = ingest::parse(kind, &bytes, &self.limits).map_err(failed)?;
        drop(bytes);
        let cfg = &self.svc.config;
        let overlap = cfg.chunk_tokens * cfg.chunk_overlap_percent / 100;
        let pieces = self.chunker.chunk(&parsed, cfg.chunk_tokens, overlap);
        if pieces.is_empty() {
            return Err(failed(ingest::Error::Empty));
        }
        self.set_status(t, id, DocumentStatus::Processing, 20, None)
            .map_err(failed)?;
        // An unusable embedding model fails the document at once, with the reason (it is
        // not retried per chunk); fixing the settings and reprocessing indexes it.
        let space = self.space_for(t).map_err(|e| match e {
            Error::Unavailable(reason) => failed(unavailable(&reason)),
            e => failed(e),
        })?;
        // While the tenant changes model, its searches use the old one: new documents get a
        // vector of both, so they are found by meaning before the switch ends too.
        let old = match &space {
            Some(space) => self
                .switch_from(t)
                .ok()
                .flatten()
                .filter(|o| o.model_id() != space.model_id()),
            None => None,
        };
        let mut old_vectors: Vec<(usize, Vec<f32>)> = Vec::new();
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; pieces.len()];
        if let Some(space) = &space {
            let total = pieces.len();
            for (b, batch) in pieces.chunks(EMBED_BATCH).enumerate() {
                if ctx.shutting_down() {
                    return Err(JobError::Interrupted);
                }
                let texts: Vec<String> = batch
                    .iter()
                    .map(|p| embed_text(&p.headings, &p.text))
                    .collect();
                let vs = space.embedder.embed(&texts).map_err(|e| {
                    self.embedding_failed(t, space, &e);
                    failed(unavailable(&e.to_string()))
                })?;
                for (i, v) in vs.into_iter().enumerate() {
                    vectors[b * EMBED_BATCH + i] = Some(v);
                }
                if let Some(old) = &old {
                    match old.embedder.embed(&texts) {
                        Ok(vs) => old_vectors.extend(
                            vs.into_iter()
                                .enumerate()
                                .map(|(i, v)| (b * EMBED_BATCH + i, v)),
                        ),
                        // Only costs finding it by meaning until the switch ends.
                        Err(e) => {
                            tracing::warn!(tenant = %t, document = %id, error = %e, "embedding a new document with the old model failed");
                        }
                    }
                }
                let done = ((b + 1) * EMBED_BATCH).min(total);
                let p = 20 + (done * 70 / total) as u8;
                ctx.progress(p);
                let _ = self.set_status(t, id, DocumentStatus::Processing, p, None);
            }
        }
        let model_id = space.as_ref().map(|s| s.model_id().to_string());
        let chunks: Vec<Chunk> = pieces
            .into_iter()
            .zip(&vectors)
            .enumerate()
            .map(|(i, (p, v))| Chunk {
                id: ChunkId::new(),
                tenant_id: t.clone(),
                document_id: id.clone(),
                ordinal: i as u32,
                text: p.text,
                page: p.page,
                headings: p.headings,
                token_count: p.token_count,
                embedding_model: v.as_ref().and(model_id.clone()),
            })
            .collect();
        // Store the chunks (replacing any from an earlier run) only if the document still exists.
        let agents = self
            .set_status_with(t, id, DocumentStatus::Processing, 95, None, |tx, d| {
                tx.delete_under::<Chunk>(t, id.as_str())?;
                put_chunks(tx, &chunks, vectors.iter().map(Option::as_deref))?;
                d.pages = parsed.pages;
                d.title = parsed.title.clone().filter(|s| !s.trim().is_empty());
                d.author = parsed.author.clone().filter(|s| !s.trim().is_empty());
                d.chunk_count = chunks.len() as u32;
                Ok(d.agent_ids.clone())
            })
            .map_err(failed)?;
        let Some(agents) = agents else { return Ok(()) };
        self.index_chunks(t, id, &chunks, vectors, &agents, space.as_deref())
            .map_err(failed)?;
        if let Some(old) = &old {
            let items: Vec<_> = old_vectors
                .into_iter()
                .filter_map(|(i, v)| {
                    let c = chunks.get(i)?;
                    Some((c.id.clone(), c.document_id.clone(), v))
                })
                .collect();
            old.index.delete_document(t, id).map_err(failed)?;
            old.index.insert(t, &items).map_err(failed)?;
            // The switch may have ended while we embedded: then the old space forgot the
            // tenant already, and these vectors must not bring it back.
            let still = self
                .switch_from(t)
                .ok()
                .flatten()
                .is_some_and(|o| Arc::ptr_eq(&o, old));
            let serving = self
                .space_for(t)
                .ok()
                .flatten()
                .is_some_and(|s| s.model_id() == old.model_id());
            if !still && !serving {
                old.index.delete_tenant(t).map_err(failed)?;
            }
        }
        self.finish_processing(t, id).map_err(failed)
    }

    /// The last step of processing a document, after its chunks were stored and indexed: it
    /// becomes `ready`. When it was deleted meanwhile, the entries just indexed come out
    /// again: the delete's own `document.unindex` job may have run before they went in, so
    /// what cannot be removed now (an index that cannot be written) is left to a new one,
    /// queued here and retried until the index takes it.
    pub fn finish_processing(&self, t: &TenantId, id: &DocumentId) -> Result<(), Error> {
        let still = self.set_status_with(t, id, DocumentStatus::Ready, 100, None, |_, d| {
            d.processed_at = Some(now());
            Ok(())
        })?;
        match still {
            Some(()) => Ok(()),
            None => self.unindex_deleted(t, id),
        }
    }

    /// Takes a deleted document's entries out of the indexes: now, or, when an index cannot
    /// be written now (a full disk), by a queued `document.unindex` job, retried until it can.
    fn unindex_deleted(&self, t: &TenantId, id: &DocumentId) -> Result<(), Error> {
        let Err(e) = self.unindex_document(t, id) else {
            return Ok(());
        };
        tracing::warn!(tenant = %t, document = %id, error = %e, "a document deleted while it was processing keeps index entries until a background retry removes them");
        let job = self.svc.store.write(|tx| {
            Jobs::enqueue_in(tx, t, JOB_UNINDEX, serde_json::json!({"documentId": id}))
        })?;
        self.jobs.wake(&job);
        Ok(())
    }

    /// Writes a document's chunks into the keyword index and, with `space`, their vectors
    /// into its vector index, replacing what the indexes held of the document.
    pub fn index_chunks(
        &self,
        t: &TenantId,
        id: &DocumentId,
        chunks: &[Chunk],
        vectors: Vec<Option<Vec<f32>>>,
        agents: &[AgentId],
        space: Option<&Space>,
    ) -> Result<(), Error> {
        self.index_text(t, id, chunks, agents)?;
        if let Some(space) = space {
            index_vectors(&space.index, t, id, chunks, vectors)?;
        }
        Ok(())
    }

    /// The keyword half of [`index_chunks`](Self::index_chunks): the document's chunks
    /// replace what the keyword index held of it, in one commit (the benchmarks time it on
    /// its own).
    pub fn index_text(
        &self,
        t: &TenantId,
        id: &DocumentId,
        chunks: &[Chunk],
        agents: &[AgentId],
    ) -> Result<(), Error> {
        let docs: Vec<TextDoc> = chunks.iter().map(|c| text_doc(c, agents)).collect();
        self.text.replace_document(t, id, &docs)?;
        Ok(())
    }

    pub(crate) fn unindex_document(&self, t: &TenantId, id: &DocumentId) -> Result<(), Error> {
        self.text.delete_document(t, id)?;
        // Every loaded space, not only the tenant's current one: a delete must not need a
        // working embedding model, and vectors of an earlier model go too.
        for space in self.spaces() {
            space.index.delete_document(t, id)?;
        }
        Ok(())
    }

    /// Re-embeds every chunk of a tenant whose vector is missing or from another model,
    /// a batch at a time into the store and the model's index (a restart resumes where it
    /// stopped), then ends the tenant's change of model: searches move to the new index,
    /// which holds every chunk by then.
    fn reembed_job(&self, ctx: &JobCtx) -> Result<(), JobError> {
        let t = ctx.job.tenant_id.clone();
        let started_with = self.svc.tenant_settings(&t).map_err(failed)?.embeddings;
        let Some(space) = self.space_for(&t).map_err(failed)? else {
            self.set_progress(&t, None);
            return Ok(());
        };
        let model = space.model_id().to_string();
        // Loads the old model after a restart: it answers searches until we are done.
        self.switch_from(&t).map_err(failed)?;
        let mut progress = self.count_embedded(&t, &model).map_err(failed)?;
        if progress.done == 0 {
            // Vectors of an earlier use of this model are stale.
            space.index.delete_tenant(&t).map_err(failed)?;
        }
        self.set_progress(&t, Some(progress));
        let mut after: Option<String> = None;
        loop {
            if ctx.shutting_down() {
                return Err(JobError::Interrupted);
            }
            // Changed again meanwhile: the job queued by that change takes over.
            match self.space_for(&t) {
                Ok(Some(now)) if Arc::ptr_eq(&now, &space) => {}
                Err(Error::Unavailable(reason)) => {
                    return Err(failed(unavailable(&reason)));
                }
                // Keyword only now: nothing left to re-embed.
                Ok(None) => {
                    self.set_progress(&t, None);
                    return Ok(());
                }
                _ => return Ok(()),
            }
            let page = self
                .svc
                .store
                .read(|tx| {
                    tx.list_filtered::<Chunk>(&t, None, after.as_deref(), EMBED_BATCH, false, |c| {
                        c.embedding_model.as_deref() != Some(model.as_str())
                    })
                })
                .map_err(failed)?;
            if page.items.is_empty() {
                break;
            }
            let texts: Vec<String> = page
                .items
                .iter()
                .map(|c| embed_text(&c.headings, &c.text))
                .collect();
            let vs = space.embedder.embed(&texts).map_err(|e| {
                self.embedding_failed(&t, &space, &e);
                failed(format!("embedding failed: {e}"))
            })?;
            let items = self
                .store_reembedded(&t, &model, &page.items, vs)
                .map_err(failed)?;
            self.index_reembedded(&t, &space.index, &items)
                .map_err(failed)?;
            progress.done = (progress.done + items.len()).min(progress.total);
            self.set_progress(&t, Some(progress));
            ctx.progress((progress.done * 100 / progress.total.max(1)) as u8);
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        if space.index.needs_rebuild(&t) {
            self.reindex_vectors(&t, &space).map_err(failed)?;
        }
        self.end_switch(&t, &space, &started_with).map_err(failed)?;
        Ok(())
    }

    /// The first half of a re-embedding batch: records `model` and the new vector of each of
    /// `chunks` the store still holds (one commit), and returns those as index items.
    /// Public, with [`index_reembedded`](Self::index_reembedded), so a test can put a delete
    /// between the two.
    pub fn store_reembedded(
        &self,
        t: &TenantId,
        model: &str,
        chunks: &[Chunk],
        vectors: Vec<Vec<f32>>,
    ) -> Result<Vec<(ChunkId, DocumentId, Vec<f32>)>, Error> {
        let items = self.svc.store.write(|tx| {
            let mut items = Vec::with_capacity(vectors.len());
            for (c, v) in chunks.iter().zip(vectors) {
                // Skip chunks deleted meanwhile.
                if let Some(mut cur) = tx.get::<Chunk>(t, &chunk_key(&c.document_id, &c.id))? {
                    cur.embedding_model = Some(model.to_string());
                    tx.put(&cur)?;
                    tx.put_vector(&cur, &v)?;
                    items.push((cur.id, cur.document_id, v));
                }
            }
            Ok::<_, store::Error>(items)
        })?;
        Ok(items)
    }

    /// The second half of a re-embedding batch: [`store_reembedded`](Self::store_reembedded)'s
    /// items go into `index`, then those whose chunk the store no longer holds come out
    /// again. A delete (or a reprocess replacing the chunks) that committed after the first
    /// half may have taken its document out of the index before the items went in; read
    /// after the insert, the store names every such chunk.
    pub fn index_reembedded(
        &self,
        t: &TenantId,
        index: &VectorIndex,
        items: &[(ChunkId, DocumentId, Vec<f32>)],
    ) -> Result<(), Error> {
        index.insert(t, items)?;
        let gone = self.svc.store.read(|tx| {
            let mut gone = Vec::new();
            for (chunk, doc, _) in items {
                if tx.get::<Chunk>(t, &chunk_key(doc, chunk))?.is_none() {
                    gone.push(chunk.clone());
                }
            }
            Ok::<_, store::Error>(gone)
        })?;
        if !gone.is_empty() {
            tracing::info!(tenant = %t, chunks = gone.len(), "re-embedded chunks deleted meanwhile leave the vector index again");
            index.delete_chunks(t, &gone)?;
        }
        Ok(())
    }

    /// (Re)processes the documents of an agent that are not ready.
    fn train_job(&self, ctx: &JobCtx) -> Result<(), JobError> {
        let t = ctx.job.tenant_id.clone();
        let ids: Vec<DocumentId> = ctx
            .job
            .payload
            .get("documentIds")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let total = ids.len().max(1);
        let mut failures = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if ctx.shutting_down() {
                return Err(JobError::Interrupted);
            }
            match self.process_document(ctx, &t, id) {
                Ok(()) => {}
                Err(JobError::Interrupted) => return Err(JobError::Interrupted),
                Err(JobError::Failed(f) | JobError::RetryAfter(f, _) | JobError::Final(f)) => {
                    let r = f.reason;
                    let _ = self.set_status(&t, id, DocumentStatus::Failed, 0, Some(r.clone()));
                    failures.push(format!("{id}: {r}"));
                }
            }
            ctx.progress(((i + 1) * 100 / total) as u8);
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failed(format!(
                "{} of {} documents failed: {}",
                failures.len(),
                ids.len(),
                failures.join("; ")
            )))
        }
    }

    /// Accepts one upload batch: checks that the agents are the tenant's and that every
    /// file is non-empty and of a supported kind (in that order, stopping at the first
    /// problem), stores the files, then creates the documents and queues their processing.
    /// Needs [`Action::ManageDocuments`]. Blocking.
    pub fn upload(
        &self,
        caller: &Caller,
        files: Vec<Upload>,
        agents: &[AgentId],
    ) -> Result<Vec<(Document, Job)>, UploadError> {
        require(caller, Action::ManageDocuments).map_err(UploadError::Failed)?;
        let t = caller.tenant();
        for a in agents {
            if self
                .svc
                .store
                .read(|tx| tx.get::<Agent>(t, a.as_str()))
                .map_err(|e| UploadError::Failed(e.into()))?
                .is_none()
            {
                return Err(UploadError::AgentNotFound);
            }
        }
        let mut accepted = Vec::new();
        for Upload { name, mime, bytes } in files {
            if bytes.is_empty() {
                return Err(UploadError::Empty { file: name });
            }
            let kind = match ingest::detect(&bytes, &name, mime.as_deref()) {
                Ok(k) => k,
                Err(e) => {
                    return Err(UploadError::Unsupported {
                        file: name,
                        reason: e.to_string(),
                    });
                }
            };
            let sha = hex::encode(Sha256::digest(&bytes));
            accepted.push((
                NewDocument {
                    name,
                    mime: kind.mime().to_string(),
                    size: bytes.len() as u64,
                    sha256: sha,
                },
                bytes,
            ));
        }
        let mut written = Vec::new();
        for (d, bytes) in &accepted {
            match self.store_file(t, &d.sha256, bytes) {
                Ok(true) => written.push(d.sha256.clone()),
                Ok(false) => {}
                Err(e) => {
                    self.forget_files(t, &written);
                    return Err(UploadError::Failed(e));
                }
            }
        }
        let docs: Vec<NewDocument> = accepted.into_iter().map(|(d, _)| d).collect();
        match self.create_documents(t, docs, agents) {
            Ok(Ok(created)) => Ok(created),
            Ok(Err((file, existing))) => Err(UploadError::Duplicate { file, existing }),
            Err(e) => {
                // Refused (a plan limit) or failed: the upload leaves no file behind.
                self.forget_files(t, &written);
                Err(UploadError::Failed(e))
            }
        }
    }

    /// Removes files this upload wrote when its documents were not created, unless a
    /// document of the tenant refers to the same content by now.
    fn forget_files(&self, t: &TenantId, shas: &[String]) {
        for sha in shas {
            let used = self
                .svc
                .store
                .read(|tx| tx.index_get(Index::DocumentSha, &make_ref(t, sha)))
                .map(|v| v.is_some())
                .unwrap_or(true);
            if !used {
                let _ = std::fs::remove_file(self.files_dir(t).join(sha));
            }
        }
    }

    /// Attaches `documents` to an agent and queues a training job that (re)indexes those
    /// of its documents that are not ready yet. Blocking.
    pub fn train_agent(
        &self,
        caller: &Caller,
        id: &AgentId,
        documents: Vec<DocumentId>,
    ) -> crate::domain::Result<Job> {
        // Also checked by get_agent/update_agent below; said here so this entry point
        // stands on its own.
        caller
            .require(Action::ManageAgents)
            .map_err(|d| crate::domain::Error::denied(d, "agent"))?;
        let s = &self.svc;
        let t = caller.tenant();
        let agent = s.get_agent(caller, id)?;
        let mut docs = agent.document_ids.clone();
        for d in documents {
            if !docs.contains(&d) {
                docs.push(d);
            }
        }
        let agent = s.update_agent(
            caller,
            id,
            crate::domain::agents::AgentInput {
                document_ids: Some(docs),
                ..Default::default()
            },
        )?;
        let pending: Vec<DocumentId> = s.store.read(|tx| {
            let mut v = Vec::new();
            for d in &agent.document_ids {
                if let Some(doc) = tx.get::<Document>(t, d.as_str())?
                    && doc.status != DocumentStatus::Ready
                {
                    v.push(doc.id);
                }
            }
            Ok(v)
        })?;
        let job = s.store.write(|tx| {
            Jobs::enqueue_in(
                tx,
                t,
                JOB_TRAIN,
                serde_json::json!({"agentId": agent.id, "documentIds": pending}),
            )
        })?;
        self.jobs.wake(&job);
        Ok(job)
    }

    /// Stores an upload's bytes content-addressed (atomic write); true when the file is
    /// new. Blocking.
    fn store_file(&self, t: &TenantId, sha: &str, bytes: &[u8]) -> Result<bool, Error> {
        let dir = self.files_dir(t);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Io(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(sha);
        if path.exists() {
            return Ok(false);
        }
        // A full or read-only disk answers 507/503 before anything is written.
        self.svc.store.check_space(bytes.len() as u64)?;
        let tmp = dir.join(format!(".{sha}.{}", uuid::Uuid::now_v7()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            // Originals are customer data: readable by the server's user only.
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            use std::io::ErrorKind as K;
            match e.kind() {
                K::StorageFull | K::QuotaExceeded | K::ReadOnlyFilesystem => {
                    Error::Store(crate::store::Error::Disk(e))
                }
                _ => Error::Io(format!("cannot store the upload: {e}")),
            }
        })?;
        Ok(true)
    }

    /// Creates documents for accepted uploads and queues their processing, in one
    /// transaction per upload batch.
    fn create_documents(
        &self,
        t: &TenantId,
        uploads: Vec<NewDocument>,
        agents: &[AgentId],
    ) -> Result<Created, Error> {
        let out = self.svc.store.write(|tx| {
            for u in &uploads {
                let key = make_ref(t, &u.sha256);
                if let Some(existing) = tx.index_get(Index::DocumentSha, &key)? {
                    let id = existing
                        .rsplit('/')
                        .next()
                        .and_then(DocumentId::parse)
                        .unwrap_or_default();
                    return Ok::<_, Error>((Err((u.name.clone(), id)), Crossings::none()));
                }
            }
            // In the creating transaction: parallel uploads at the limit cannot both pass.
            let bytes: u64 = uploads.iter().map(|u| u.size).sum();
            let mut crossed = self
                .svc
                .use_quota(tx, t, Limit::Documents, uploads.len() as u64)?;
            crossed.extend(self.svc.use_quota(tx, t, Limit::StorageBytes, bytes)?);
            let mut created = Vec::new();
            for u in &uploads {
                let key = make_ref(t, &u.sha256);
                let now = now();
                let doc = Document {
                    id: DocumentId::new(),
                    tenant_id: t.clone(),
                    name: u.name.clone(),
                    mime_type: u.mime.clone(),
                    size_bytes: u.size,
                    sha256: u.sha256.clone(),
                    status: DocumentStatus::Queued,
                    progress: 0,
                    error: None,
                    pages: None,
                    chunk_count: 0,
                    title: None,
                    author: None,
                    agent_ids: agents.to_vec(),
                    created_at: now,
                    updated_at: now,
                    processed_at: None,
                };
                tx.index_insert_new(Index::DocumentSha, &key, &make_ref(t, doc.id.as_str()))?;
                tx.put(&doc)?;
                for a in agents {
                    if let Some(mut agent) = tx.get::<Agent>(t, a.as_str())?
                        && !agent.document_ids.contains(&doc.id)
                    {
                        agent.document_ids.push(doc.id.clone());
                        agent.updated_at = now;
                        tx.put(&agent)?;
                    }
                }
                let job = Jobs::enqueue_in(
                    tx,
                    t,
                    JOB_PROCESS,
                    serde_json::json!({"documentId": doc.id}),
                )?;
                created.push((doc, job));
            }
            Ok((Ok(created), crossed))
        })?;
        let (out, crossed) = out;
        self.svc.announce(crossed);
        if let Ok(created) = &out {
            for (doc, job) in created {
                self.publish_status(t, &doc.id, DocumentStatus::Queued, 0, None);
                self.jobs.wake(job);
            }
        }
        Ok(out)
    }

    /// Deletes a document: record, chunks, index entries, agent links and (when no other
    /// document of the tenant uses it) the original file. Safe while it is processing.
    /// Needs [`Action::ManageDocuments`]; `false` when the tenant has no such document.
    pub fn delete_document(&self, caller: &Caller, id: &DocumentId) -> Result<bool, Error> {
        require(caller, Action::ManageDocuments)?;
        let t = caller.tenant();
        let removed = self.svc.store.write(|tx| {
            let Some(d) = tx.get::<Document>(t, id.as_str())? else {
                return Ok::<_, store::Error>(None);
            };
            let job = Jobs::enqueue_in(tx, t, JOB_UNINDEX, serde_json::json!({"documentId": id}))?;
            tx.delete_under::<Chunk>(t, id.as_str())?;
            tx.index_remove(Index::DocumentSha, &make_ref(t, &d.sha256))?;
            for a in &d.agent_ids {
                if let Some(mut agent) = tx.get::<Agent>(t, a.as_str())? {
                    agent.document_ids.retain(|x| x != id);
                    tx.put(&agent)?;
                }
            }
            tx.delete::<Document>(t, id.as_str())?;
            Ok(Some((d, job)))
        })?;
        let Some((d, job)) = removed else {
            return Ok(false);
        };
        // The delete is committed: searches stop returning the document now (hits are read
        // back from the store). An index that cannot be written now (a full disk) is caught
        // up by the queued job, which otherwise finds nothing left to do.
        if let Err(e) = self.unindex_document(t, id) {
            tracing::warn!(tenant = %t, document = %id, error = %e, "a deleted document's chunks stay in the indexes until a background retry removes them");
        }
        self.jobs.wake(&job);
        let path = self.files_dir(t).join(&d.sha256);
        // Through the store: a backup copying files right now defers the removal.
        if let Err(e) = self.svc.store.remove_stored(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a document's file");
        }
        Ok(true)
    }

    /// Re-runs the pipeline of a document (e.g. after a model change). Needs
    /// [`Action::ManageDocuments`]; `None` when the tenant has no such document.
    pub fn reprocess(
        &self,
        caller: &Caller,
        id: &DocumentId,
    ) -> Result<Option<(Document, Job)>, Error> {
        require(caller, Action::ManageDocuments)?;
        let t = caller.tenant();
        let out = self.set_status_with(t, id, DocumentStatus::Queued, 0, None, |tx, d| {
            let job =
                Jobs::enqueue_in(tx, t, JOB_PROCESS, serde_json::json!({"documentId": d.id}))?;
            Ok((d.clone(), job))
        })?;
        if let Some((_, job)) = &out {
            self.jobs.wake(job);
        }
        Ok(out)
    }
}

/// The created documents and their jobs, or the name of a duplicate upload and the id of
/// the document that already has its content.
pub type Created = Result<Vec<(Document, Job)>, (String, DocumentId)>;

/// One file of an upload request, as received.
pub struct Upload {
    pub name: String,
    /// The type the client declared, if any.
    pub mime: Option<String>,
    pub bytes: Vec<u8>,
}

/// Why an upload batch was refused: the caller's mistakes first, our faults last.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("agent not found")]
    AgentNotFound,
    #[error("`{file}` is empty")]
    Empty { file: String },
    #[error("`{file}`: {reason}")]
    Unsupported { file: String, reason: String },
    #[error("`{file}` was already uploaded")]
    Duplicate { file: String, existing: DocumentId },
    #[error(transparent)]
    Failed(Error),
}

/// An accepted upload, already stored on disk.
pub struct NewDocument {
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub sha256: String,
}

/// The reason a document failed because its tenant's embedding model is unavailable.
fn unavailable(reason: &str) -> String {
    format!(
        "embeddings unavailable: {reason}; keyword search is not affected. Fix the embedding \
         settings, then reprocess the document"
    )
}

/// What is embedded for a chunk: its heading path gives the text its context. Public so
/// the evaluators embed passages exactly as ingestion does.
pub fn embed_text(headings: &[String], text: &str) -> String {
    if headings.is_empty() {
        text.to_string()
    } else {
        format!("{}\n{}", headings.join(" > "), text)
    }
}
