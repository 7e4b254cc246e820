"""The PostgreSQL queue engine: bullmq's postgres backend tables and SQL functions, with
Settler's submit path, fairness state and worker lane on top (`PgJobQueue`, `PgLaneWorker`).
"""
