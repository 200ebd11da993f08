#!/bin/bash
# run8.sh DB SCRIPT N CLIENTS: as run.sh, for the databases of the 2026-12-03 round (cur, qa, qd; see README)
P="-h /tmp/pgx -p 55432 -U postgres"
db=$1; script=$2; n=$3; c=$4; SEED=${SEED:-seed.sql}
psql -q $P -d $db -c "truncate job cascade" >/dev/null 2>&1
psql -q $P -d $db -v n=$n -f $SEED >/dev/null
psql -q $P -d $db -c "vacuum analyze" -c "checkpoint" >/dev/null
lsn0=$(psql -tA $P -d $db -c "select pg_current_wal_lsn()")
t0=$(date +%s.%N)
out=$(pgbench $P -n -c $c -j 2 -t $((n / c)) -f $script $db 2>&1)
lsn1=$(psql -tA $P -d $db -c "select pg_current_wal_lsn()")
wal=$(psql -tA $P -d $db -c "select pg_wal_lsn_diff('$lsn1','$lsn0')")
left=$(psql -tA $P -d $db -c "select count(*) from job_step s where s.status <> 'completed' and not exists (select 1 from step_result r where r.job_id = s.job_id and r.step_name = s.step_name)")
q=$(psql -tA $P -d $db -c "select count(*) from pg_tables where tablename='step_queue'")
[ "$q" = 1 ] && q=$(psql -tA $P -d $db -c "select count(*) from step_queue") || q=-
tps=$(echo "$out" | grep -oP 'tps = \K[0-9.]+' | head -1)
echo "$db $script c=$c tps=$tps wal/job=$(echo "scale=0; $wal / $n" | bc) unfinished=$left queue=$q $(echo "$out" | grep -i "error\|fail" | head -2)"
