//! The responses of allowed requests that made `tools/list` calls (README, "Tool lists
//! filtered per caller"): their headers lose what the rewrite makes wrong (`content-length`,
//! the encoding of a body replaced), their bodies go through `tools_list::ResponseRewrite`
//! chunk by chunk. Every other response is not looked at.

use super::pending::{Listing, Pending};
use super::{Flow, Host, State};
use crate::config::Config;
use crate::metrics::Metric;
use crate::tools_list::{Chunk, ResponseRewrite};

impl<H: Host> State<H> {
    pub(super) fn on_response_headers(
        &mut self,
        config: &Config,
        context: u32,
        end_of_stream: bool,
    ) -> Flow {
        if !matches!(
            self.pending.get_mut(context),
            Some(Pending::Listing(Listing::Requested(_)))
        ) {
            return Flow::Continue;
        }
        let Some(Pending::Listing(Listing::Requested(filter))) = self.pending.remove(context)
        else {
            return Flow::Continue;
        };
        if end_of_stream {
            return Flow::Continue; // no body: no result
        }
        let content_type = self.host.response_header(context, "content-type");
        let encoding = self.host.response_header(context, "content-encoding");
        let (rewrite, remove) = ResponseRewrite::new(
            filter,
            config.max_body_bytes,
            content_type.as_deref(),
            encoding.as_deref(),
        );
        for name in remove {
            self.host.remove_response_header(context, name);
        }
        self.pending.insert(
            context,
            Pending::Listing(Listing::Responding(Box::new(rewrite))),
        );
        Flow::Continue
    }

    /// A chunk of the response body (`size`: what the host holds), or its end.
    pub(super) fn on_response_body(&mut self, context: u32, size: usize, end: bool) -> Flow {
        self.rewrite_body(context, Some(size), end)
    }

    /// Trailers end the response body: a body buffered whole is rewritten now. (An event
    /// still arriving when an event stream ends is dropped: clients discard it too.)
    pub(super) fn on_response_trailers(&mut self, context: u32) -> Flow {
        self.rewrite_body(context, None, true)
    }

    /// Hands what the host holds of the body to the rewrite and applies its answer. `size`:
    /// how much it holds; `None` at the trailers, where only a body buffered whole is left
    /// to rewrite (read then to learn its size).
    fn rewrite_body(&mut self, context: u32, size: Option<usize>, end: bool) -> Flow {
        let Some(Pending::Listing(Listing::Responding(rewrite))) = self.pending.get_mut(context)
        else {
            return Flow::Continue;
        };
        let host = &self.host;
        let (size, held) = match size {
            Some(size) => (size, None),
            None if rewrite.buffers_whole() => {
                let held = host.response_body(context, usize::MAX);
                (held.len(), Some(held))
            }
            None => return Flow::Continue,
        };
        let read = || held.unwrap_or_else(|| host.response_body(context, size));
        let chunk = rewrite.on_body(size, read, end);
        self.counters
            .add(Metric::ToolsHidden, rewrite.take_hidden());
        match chunk {
            Chunk::Pass => Flow::Continue,
            Chunk::Buffer => Flow::Pause,
            Chunk::Replace(body) => {
                self.host.set_response_body(context, size, &body);
                Flow::Continue
            }
        }
    }
}
