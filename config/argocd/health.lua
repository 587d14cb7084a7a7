-- Argo CD health of a switchyard.dev/MigrationPlan, from the status the
-- operator writes (phase, kstatus conditions, per-node progress).
-- Install: argocd-cm-patch.yaml. Tested against statuses serialised from
-- switchyard-api's types (plugin/tests/argocd_health.rs).
--
-- Argo CD runs this with gopher-lua (Lua 5.1): no goto, no integer
-- division, `#` only on sequences.
local hs = {}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

-- The plan's own words when it has them, else its node counts.
local function describe(status)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  local summary = status.summary or {}
  return tostring(status.phase) .. ": " .. tostring(summary.migrated or 0) ..
      "/" .. tostring(summary.total or 0) .. " nodes migrated"
end

-- A node that failed keeps its failure through its rollback: a plan rolled
-- back with one is a migration that did not work, not one a user undid.
local function first_failure(status)
  if status.nodes == nil then
    return nil
  end
  for _, n in ipairs(status.nodes) do
    if n.failure ~= nil and n.failure ~= "" then
      return n.name .. ": " .. n.failure
    end
  end
  return nil
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller"
  return hs
end

-- A status written for an older spec says nothing about the current one
-- (a rollback or pause just applied).
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end

local phase = status.phase
hs.message = describe(status)
if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Planned" then
  local preflight = condition(status, "PreflightPassed")
  if preflight ~= nil and preflight.status == "False" then
    hs.status = "Degraded"
  else
    hs.status = "Healthy"
  end
elseif phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "Failed" then
  hs.status = "Degraded"
elseif phase == "RolledBack" then
  local failure = first_failure(status)
  if failure ~= nil then
    hs.status = "Degraded"
    hs.message = "rolled back after a failure: " .. failure
  else
    hs.status = "Healthy"
  end
else
  -- Pending, Preflight, Migrating, Finalizing, RollingBack: the operator
  -- moves on by itself.
  hs.status = "Progressing"
end
return hs
