//! Reading the knowledge base's records: documents, their chunks and background jobs.
//! Writes (uploads, deletion, processing, training) belong to `knowledge/`, which owns the
//! indexes the writes must keep in step. Must not depend on api/ or on axum.

use super::{Error, PageReq, Result, Services};
use crate::auth::{Action, Caller};
use crate::model::{Chunk, Document, DocumentStatus, Job};
use crate::store::Page;
use crate::types::{AgentId, DocumentId, JobId};

/// Which documents a listing shows.
#[derive(Debug, Clone, Default)]
pub struct DocumentFilter {
    pub status: Option<DocumentStatus>,
    pub agent_id: Option<AgentId>,
}

fn require(caller: &Caller, action: Action) -> Result<()> {
    caller
        .require(action)
        .map_err(|d| Error::denied(d, "document"))
}

impl Services {
    /// The tenant's documents, newest first.
    pub fn list_documents(
        &self,
        caller: &Caller,
        f: &DocumentFilter,
        page: &PageReq,
    ) -> Result<Page<Document>> {
        require(caller, Action::ReadDocuments)?;
        Ok(self.store.read(|tx| {
            tx.list_filtered::<Document>(
                caller.tenant(),
                None,
                page.cursor.as_deref(),
                page.limit,
                true,
                |d| {
                    f.status.is_none_or(|st| d.status == st)
                        && f.agent_id.as_ref().is_none_or(|a| d.agent_ids.contains(a))
                },
            )
        })?)
    }

    pub fn get_document(&self, caller: &Caller, id: &DocumentId) -> Result<Document> {
        require(caller, Action::ReadDocuments)?;
        self.store
            .read(|tx| tx.get::<Document>(caller.tenant(), id.as_str()))?
            .ok_or(Error::NotFound("document"))
    }

    /// The chunks of a document, in order. Cursors are chunk ids: the store's keys (which
    /// start with the document id) stay inside.
    pub fn list_chunks(
        &self,
        caller: &Caller,
        id: &DocumentId,
        page: &PageReq,
    ) -> Result<Page<Chunk>> {
        require(caller, Action::ReadDocuments)?;
        let t = caller.tenant();
        let out = self.store.read(|tx| {
            if tx.get::<Document>(t, id.as_str())?.is_none() {
                return Ok(None);
            }
            let after = page.cursor.as_ref().map(|c| format!("{id}/{c}"));
            Ok(Some(tx.list::<Chunk>(
                t,
                Some(id.as_str()),
                after.as_deref(),
                page.limit,
                false,
            )?))
        })?;
        let r = out.ok_or(Error::NotFound("document"))?;
        Ok(Page {
            items: r.items,
            next: r
                .next
                .and_then(|k| k.rsplit('/').next().map(str::to_string)),
        })
    }

    /// A background job (processing, training), for polling.
    pub fn get_job(&self, caller: &Caller, id: &JobId) -> Result<Job> {
        require(caller, Action::ReadDocuments)?;
        self.store
            .read(|tx| tx.get::<Job>(caller.tenant(), id.as_str()))?
            .ok_or(Error::NotFound("job"))
    }
}
