-- Conversations of the gateway's Ask and AskStream: each turn's question, the standalone question
-- that retrieval used, and the answer. A conversation belongs to one tenant and is named by an id its
-- caller chose, unique within the tenant (two tenants may use the same id for two conversations).
-- It lives until `expires_at`, which every new turn pushes back by the retention period; expired
-- rows are invisible to every statement at once and deleted in the background.

CREATE TABLE conversations (
    tenant text COLLATE "C" NOT NULL,
    conversation_id text COLLATE "C" NOT NULL,
    turn_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, conversation_id)
);

-- A tenant's conversations most recently updated first; the id breaks ties so pages never skip or repeat one.
CREATE INDEX conversations_listing ON conversations (tenant, updated_at DESC, conversation_id DESC);
-- The purge of expired conversations.
CREATE INDEX conversations_expiry ON conversations (expires_at);

CREATE TABLE conversation_turns (
    tenant text COLLATE "C" NOT NULL,
    conversation_id text COLLATE "C" NOT NULL,
    turn_index integer NOT NULL CHECK (turn_index >= 1),
    question text NOT NULL,
    standalone_question text NOT NULL,
    rewrite_method smallint NOT NULL DEFAULT 0,
    answer text NOT NULL,
    collection text NOT NULL,
    cited_document_ids text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, conversation_id, turn_index),
    FOREIGN KEY (tenant, conversation_id) REFERENCES conversations ON DELETE CASCADE
);
