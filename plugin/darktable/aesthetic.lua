--[[
  aesthetic: aes-index's aesthetic scores, star ratings and culling inside darktable 4.2+
  (Lua API 9). Part of aes-index; all the thinking happens in the aes-index program.
]]

--[[
A lighttable module (right panel) whose buttons act on the selected images or the current
collection: "score and rate" (stars by aes-index's rating policy, plus the tags
aesthetic|stars|N and aesthetic|score|70-80%), "select top N%", "remove our stars",
"cull" (bursts and near-duplicates grouped with the keeper as group leader, one group per
film roll, tags aesthetic|keeper, aesthetic|keeper in another folder, aesthetic|blurry,
aesthetic|overexposed, aesthetic|underexposed; with
"reject technical failures" on, those get darktable's reject where no person rated them)
and "undo cull". Newly imported photos are scored and rated too, in one batch per import.

Install with `aes-index darktable install`, then restart darktable. Where lua-scripts'
script manager is installed the script goes into <config>/lua/aes_index/ and is started
and stopped there like any other script (the `script_data` block below is what
tools/script_manager.lua reads); otherwise into <config>/lua/aesthetic.lua with
`require "aesthetic"` in <config>/luarc.

For every action the script writes a JSON request into a temporary file, runs

    'aes-index' 'darktable' 'rate' '--request' '/tmp/lua_XXXXXX' '--response' '/tmp/lua_YYYYYY'

and applies the JSON answer. Photo paths travel only inside those files, never on a command
line, and the one program ever run is the configured aes-index, single-quoted for the shell.
The request carries each image's current rating (and, to cull, its group and our tags), so
aes-index can keep what a person set, and the script reports back what it set, so it can be
undone. Long work runs as a darktable background job with a progress bar and a cancel
button, a chunk of images per aes-index run; cancelling stops after the running chunk.

Preferences (settings > lua options): the aes-index command; "1 star counts as unrated"
(darktable gives every import 1 star: turn this on if you never use 1 star yourself, else
aes-index takes those stars for your own and leaves the photos alone); scoring new imports;
"reject technical failures" when culling (off by default; also a checkbox in the module).
The rating policy itself is aes-index's (~/.config/aes-index/config.toml: policy, cuts).

The actions are plain functions of the table `require "aesthetic"` returns, for scripts and
tests: rate(images), select_top(images, percent), remove_stars(images), cull(images),
uncull(images), review(images), cancel(), flush_imports(), status(). Each action returns a summary table,
or nil and an error message. (json and sh_quote are exposed too, so the tests can check
them.) The same table is lua-scripts' script_data: metadata, destroy, restart, show.
]]

local dt = require "darktable"

local NAME = "aesthetic"
local MIN_API = "9.0.0" -- darktable 4.2
local PROTOCOL_VERSION = 1
local TAG_PREFIX = "aesthetic|" -- every tag we attach lives below this
local RATING_TAG_PREFIXES = { TAG_PREFIX .. "stars|", TAG_PREFIX .. "score|" } -- what "rate" manages
-- "keeper in another folder": a group's frame in another film roll than its keeper, grouped
-- there under the best of the group in that film roll (aes-index plans it: features/darktable_plan.py)
local CULL_TAGS = { TAG_PREFIX .. "keeper", TAG_PREFIX .. "keeper in another folder", TAG_PREFIX .. "blurry",
  TAG_PREFIX .. "overexposed", TAG_PREFIX .. "underexposed" }
local IMPORT_QUIET_MS = 1500 -- an import batch is complete after this long without a new photo

-- lua-scripts' convention (lib/dtutils.lua, check_min_api_version; used by every contrib
-- script, e.g. contrib/AutoGrouper.lua): refuse to load on an older API with a message in
-- darktable. Without lua-scripts installed, the same check by hand.
local have_dtutils, du = pcall(require, "lib/dtutils")
if have_dtutils and type(du) == "table" and du.check_min_api_version then
  du.check_min_api_version(MIN_API, NAME)
elseif dt.configuration.api_version_major < 9 then
  error("aesthetic needs darktable 4.2 or later (Lua API " .. MIN_API .. ")")
end

-- What tools/script_manager.lua (lua-scripts) shows and calls. It reads the metadata block
-- from this file's text (get_script_metadata: `script_data.metadata = {`, one `key = value`
-- a line, then `}` on a line of its own) and uses the table `require` returns:
-- destroy() when a person stops the script, restart()/show() when it is started again;
-- destroy_method "hide" because darktable's Lua API cannot remove a lib, only hide it.
local script_data = {}

script_data.metadata = {
  name = "aesthetic",
  purpose = "aesthetic scores, star ratings and culling of bursts and duplicates from aes-index",
  author = "aes-index",
  help = "packaging/darktable/README.md in aes-index, or the README section darktable"
}

script_data.destroy = nil -- set below, once the lib and events exist
script_data.destroy_method = "hide"
script_data.restart = nil
script_data.show = nil

local M = script_data -- the actions below are this table's functions too

-- ----------------------------------------------------------------------- JSON
-- Just what the protocol needs: objects, arrays (tables with [1], or empty), strings,
-- numbers, booleans; null decodes to nil. Bytes >= 0x80 pass through untouched, so a file
-- name that isn't valid UTF-8 survives (aes-index reads it with surrogateescape).

local json = {}
M.json = json

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function encode_string(text)
  -- explicit byte ranges, not %c: in a Latin-1 locale %c would also match 0x80-0x9f
  local escaped = text:gsub('[%z\1-\31"\\\127]', function(c)
    return ESCAPES[c] or string.format("\\u%04x", c:byte())
  end)
  return '"' .. escaped .. '"'
end

function json.encode(value)
  local kind = type(value)
  if kind == "string" then
    return encode_string(value)
  elseif kind == "number" then
    if math.type(value) == "integer" then return tostring(value) end
    assert(value == value and math.abs(value) ~= math.huge, "json: cannot encode " .. tostring(value))
    return (string.format("%.17g", value):gsub(",", ".")) -- whatever the locale's decimal mark
  elseif kind == "boolean" then
    return tostring(value)
  elseif kind == "table" then
    local parts = {}
    if next(value) == nil or value[1] ~= nil then
      for i, item in ipairs(value) do parts[i] = json.encode(item) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for key, item in pairs(value) do
      parts[#parts + 1] = encode_string(tostring(key)) .. ":" .. json.encode(item)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  error("json: cannot encode a " .. kind)
end

local UNESCAPES = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
local LITERALS = { ["true"] = true, ["false"] = false, ["null"] = json } -- json: a stand-in for null

local decode_value

local function skip_space(text, pos)
  return text:find("[^ \t\r\n]", pos) or #text + 1
end

local function fail(pos, what)
  error(string.format("json: %s at byte %d", what, pos), 0)
end

local function decode_codepoint(text, pos) -- pos: just after "\u"; returns the UTF-8 bytes and the next pos
  local code = tonumber(text:sub(pos, pos + 3), 16) or fail(pos, "bad \\u escape")
  local low = text:match("^\\u(%x%x%x%x)", pos + 4)
  if code >= 0xD800 and code <= 0xDBFF and low and tonumber(low, 16) >= 0xDC00 then
    return utf8.char(0x10000 + (code - 0xD800) * 0x400 + (tonumber(low, 16) - 0xDC00)), pos + 10
  end
  return utf8.char(code), pos + 4
end

local function decode_string(text, pos) -- pos: at the opening quote
  local parts, i = {}, pos + 1
  while true do
    local special = text:find('["\\]', i) or fail(pos, "unterminated string")
    parts[#parts + 1] = text:sub(i, special - 1)
    if text:sub(special, special) == '"' then return table.concat(parts), special + 1 end
    local escape = text:sub(special + 1, special + 1)
    if escape == "u" then
      local char
      char, i = decode_codepoint(text, special + 2)
      parts[#parts + 1] = char
    else
      parts[#parts + 1] = UNESCAPES[escape] or fail(special, "bad escape")
      i = special + 2
    end
  end
end

local function decode_list(text, pos, closing, read_item) -- pos: just after the opening bracket
  pos = skip_space(text, pos)
  if text:sub(pos, pos) == closing then return pos + 1 end
  while true do
    pos = skip_space(text, read_item(pos))
    local char = text:sub(pos, pos)
    if char == closing then return pos + 1 end
    if char ~= "," then fail(pos, "expected ',' or '" .. closing .. "'") end
    pos = skip_space(text, pos + 1)
  end
end

local function decode_object(text, pos)
  local object = {}
  local after = decode_list(text, pos + 1, "}", function(at)
    if text:sub(at, at) ~= '"' then fail(at, "expected a key") end
    local key, next_pos = decode_string(text, at)
    next_pos = skip_space(text, next_pos)
    if text:sub(next_pos, next_pos) ~= ":" then fail(next_pos, "expected ':'") end
    local value
    value, next_pos = decode_value(text, skip_space(text, next_pos + 1))
    if value ~= json then object[key] = value end
    return next_pos
  end)
  return object, after
end

local function decode_array(text, pos)
  local array = {}
  local after = decode_list(text, pos + 1, "]", function(at)
    local value, next_pos = decode_value(text, at)
    array[#array + 1] = value
    return next_pos
  end)
  return array, after
end

function decode_value(text, pos)
  local char = text:sub(pos, pos)
  if char == "{" then return decode_object(text, pos) end
  if char == "[" then return decode_array(text, pos) end
  if char == '"' then return decode_string(text, pos) end
  local number = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if number then return tonumber(number) or fail(pos, "bad number"), pos + #number end
  for word, value in pairs(LITERALS) do
    if text:sub(pos, pos + #word - 1) == word then return value, pos + #word end
  end
  fail(pos, "unexpected " .. (char == "" and "end" or char))
end

function json.decode(text)
  local value, pos = decode_value(text, skip_space(text, 1))
  if skip_space(text, pos) <= #text then fail(pos, "trailing data") end
  return value
end

-- ----------------------------------------------------------------------- preferences

dt.preferences.register(NAME, "executable", "string", "aesthetic: aes-index command",
  "the aes-index program; a full path if darktable doesn't find it on its PATH", "aes-index")
dt.preferences.register(NAME, "treat_one_star_as_unrated", "bool", "aesthetic: 1 star counts as unrated",
  "darktable gives every import 1 star. On: aes-index may rate photos that have 1 star (use it if you " ..
  "never give 1 star yourself). Off: a photo with any stars is yours and keeps them", false)
dt.preferences.register(NAME, "score_imports", "bool", "aesthetic: score new imports",
  "score and rate newly imported photos automatically, one batch per import", true)
dt.preferences.register(NAME, "reject_flagged", "bool", "aesthetic: cull rejects technical failures",
  "when culling, give blurry, over- or underexposed photos beside an unflagged keeper darktable's reject, " ..
  "unless a person rated them", false)

local function executable()
  local value = dt.preferences.read(NAME, "executable", "string")
  return (value ~= nil and value ~= "") and value or "aes-index"
end

local function unrated_arguments()
  if dt.preferences.read(NAME, "treat_one_star_as_unrated", "bool") then
    return { "--treat-as-unrated", "1" }
  end
  return {}
end

local function cull_arguments()
  local words = unrated_arguments()
  if dt.preferences.read(NAME, "reject_flagged", "bool") then words[#words + 1] = "--reject" end
  return words
end

-- ----------------------------------------------------------------------- talking to aes-index

-- One shell word: single quotes keep everything literal, and a quote inside becomes '\''.
local function sh_quote(word)
  local quoted = word:gsub("'", "'\\''")
  return "'" .. quoted .. "'"
end
M.sh_quote = sh_quote

local function read_file(path)
  local file = io.open(path, "rb")
  if not file then return "" end
  local text = file:read("a")
  file:close()
  return text
end

local function write_file(path, text)
  local file = assert(io.open(path, "wb"))
  file:write(text)
  file:close()
end

local function last_line(text)
  return text:match("([^\n]+)\n*$")
end

-- Run `aes-index darktable <action> --request R --response S [arguments]`; the decoded answer,
-- or nil and aes-index's last line of output. dt.control.execute hands the command to a
-- shell and lets go of darktable's Lua lock while it runs (darktable src/lua/call.c,
-- RUN_COMMAND: dt_lua_unlock around system()), so darktable stays responsive meanwhile
-- and a job's cancel button gets through.
local function ask(action, request, arguments)
  local request_file, response_file, log_file = os.tmpname(), os.tmpname(), os.tmpname()
  request.version = PROTOCOL_VERSION
  write_file(request_file, json.encode(request))
  local words = { executable(), "darktable", action, "--request", request_file, "--response", response_file }
  for _, word in ipairs(arguments or {}) do words[#words + 1] = word end
  for i, word in ipairs(words) do words[i] = sh_quote(word) end
  local command = table.concat(words, " ") .. " >" .. sh_quote(log_file) .. " 2>&1"
  local status = dt.control.execute(command)
  local response, log = read_file(response_file), read_file(log_file)
  os.remove(request_file)
  os.remove(response_file)
  os.remove(log_file)
  if status ~= 0 or response == "" then
    return nil, last_line(log) or string.format("%s failed (status %d)", executable(), status)
  end
  return json.decode(response)
end

local function path_of(image)
  return image.path .. "/" .. image.filename
end

local function describe(image, ref)
  return { ref = ref, path = path_of(image), duplicate = image.duplicate_index, rating = image.rating }
end

local function describe_all(images)
  local list = {}
  for ref, image in ipairs(images) do list[ref] = describe(image, ref) end
  return list
end

local function has_prefix(name, prefixes)
  for _, prefix in ipairs(prefixes) do
    if name:sub(1, #prefix) == prefix then return true end
  end
  return false
end

local function attached_tags(image, wanted)
  local names = {}
  for _, tag in ipairs(dt.tags.get_tags(image)) do
    if wanted(tag.name) then names[#names + 1] = tag.name end
  end
  table.sort(names)
  return names
end

local function is_cull_tag(name)
  for _, cull_tag in ipairs(CULL_TAGS) do
    if name == cull_tag then return true end
  end
  return false
end

local function has_tag(image, name)
  for _, tag in ipairs(dt.tags.get_tags(image)) do
    if tag.name == name then return true end
  end
  return false
end

-- To cull, an image also says its darktable id, its group (the leader's id: darktable's
-- group_id) and how many images that group holds, and which of our cull tags it has.
local function describe_for_cull(image, ref)
  local entry = describe(image, ref)
  entry.id = image.id
  entry.group = image.group_leader.id
  entry.group_size = #image:get_group_members()
  entry.tags = attached_tags(image, is_cull_tag)
  return entry
end

local function describe_all_for_cull(images)
  local list = {}
  for ref, image in ipairs(images) do list[ref] = describe_for_cull(image, ref) end
  return list
end

-- Our rating tags on an image become exactly `names`; other tags (a person's, and the
-- cull's, which "cull" and "undo cull" manage) are never touched.
local function set_our_tags(image, names)
  local missing = {}
  for _, name in ipairs(names) do missing[name] = true end
  for _, tag in ipairs(dt.tags.get_tags(image)) do
    if has_prefix(tag.name, RATING_TAG_PREFIXES) then
      if missing[tag.name] then missing[tag.name] = nil else dt.tags.detach(tag, image) end
    end
  end
  for name in pairs(missing) do dt.tags.attach(dt.tags.create(name), image) end
end

-- ----------------------------------------------------------------------- long work as a job

-- darktable's background job (Lua API: darktable.gui.create_job(text, show_progress_bar,
-- cancel_callback) returns a job whose `percent` (0..1) moves the bar and whose `valid`
-- turns false once the job ends; setting it false ends it. darktable src/lua/gui.c,
-- lua_create_job / lua_job_valid). The cancel button runs the callback as another Lua call,
-- which needs the Lua lock: it gets it while a chunk's aes-index runs (dt.control.execute
-- lets go of the lock), so the work checks `job.valid` between chunks and stops there.
-- (lua-scripts issue 381 describes a loop that never lets go and so cannot be cancelled.)
M.chunk_size = 100 -- images per aes-index run: a progress step, and the most a cancel waits for
M.progress_listener = nil -- function(label, done, total, job) after each chunk, for scripts and tests

local running_job = nil

local function end_job(job)
  if job.valid then job.valid = false end
end

local function start_job(label)
  if dt.gui == nil or dt.gui.create_job == nil then -- no lighttable to show it in
    return { valid = true, percent = 0 }
  end
  local job = dt.gui.create_job(NAME .. ": " .. label, true, end_job)
  running_job = job
  return job
end

-- Stops the running job after its current chunk, as its cancel button does.
function M.cancel()
  if running_job then end_job(running_job) end
end

-- Runs `step(chunk)` over `images` a chunk at a time inside one job. step returns a summary
-- table (added up over the chunks) or nil and an error, which stops the work.
-- `share` is the part of the bar the chunks fill (the rest belongs to what follows).
local function in_chunks(job, label, images, step, share)
  local total, done, sums = #images, 0, {}
  while done < total do
    if not job.valid then
      sums.cancelled_after = done
      return sums
    end
    local chunk = {}
    for i = done + 1, math.min(done + M.chunk_size, total) do chunk[#chunk + 1] = images[i] end
    local result, err = step(chunk)
    if not result then return nil, err end
    for key, value in pairs(result) do
      if type(value) == "number" then sums[key] = (sums[key] or 0) + value end
    end
    done = done + #chunk
    if job.valid then job.percent = (share or 1) * done / total end
    if M.progress_listener then M.progress_listener(label, done, total, job) end
  end
  return sums
end

local function as_job(label, work)
  local job = start_job(label)
  local ok, result, err = pcall(work, job)
  if running_job == job then running_job = nil end
  end_job(job)
  if not ok then return nil, tostring(result) end
  return result, err
end

-- ----------------------------------------------------------------------- rating

-- aes-index decided on the ratings the request carried; an image a person re-rated while
-- it decided keeps the person's rating (the same-read rule of every rating target).
local function still_as_sent(image, sent)
  return image.rating == sent.rating
end

local function rate_chunk(images)
  local sent = describe_all(images)
  local answer, err = ask("rate", { images = sent }, unrated_arguments())
  if not answer then return nil, err end
  local rated, changed = {}, 0
  for _, item in ipairs(answer.images) do
    local image = images[item.ref]
    if item.tags then set_our_tags(image, item.tags) end
    if item.rating and not still_as_sent(image, sent[item.ref]) then
      changed = changed + 1
    elseif item.rating then
      rated[#rated + 1] = { path = sent[item.ref].path, duplicate = image.duplicate_index,
                            old = image.rating, new = item.rating }
      image.rating = item.rating
    end
  end
  if #rated > 0 then
    local reported, report_err = ask("applied", { run = answer.run, rated = rated })
    if not reported then return nil, "ratings set, but not journaled: " .. report_err end
  end
  return { scored = #answer.images, rated = #rated, changed = changed, errors = #answer.errors }
end

local function rate(images)
  return as_job("score and rate", function(job) return in_chunks(job, "rate", images, rate_chunk) end)
end

local function select_top(images, percent)
  local answer, err = ask("top", { images = describe_all(images) }, { "--percent", tostring(math.floor(percent + 0.5)) })
  if not answer then return nil, err end
  local chosen = {}
  for _, item in ipairs(answer.images) do
    if item.selected then chosen[#chosen + 1] = images[item.ref] end
  end
  dt.gui.selection(chosen)
  return { scored = #answer.images, selected = #chosen }
end

local function remove_stars(images)
  local sent = describe_all(images)
  local answer, err = ask("undo", { images = sent })
  if not answer then return nil, err end
  local restored = {}
  for _, item in ipairs(answer.images) do
    local image = images[item.ref]
    if still_as_sent(image, sent[item.ref]) then
      image.rating = item.rating
      restored[#restored + 1] = { path = sent[item.ref].path, duplicate = image.duplicate_index, rating = item.rating }
    end
  end
  for _, image in ipairs(images) do set_our_tags(image, {}) end
  if #restored > 0 then
    local reported, report_err = ask("applied", { restored = restored })
    if not reported then return nil, "ratings restored, but not journaled: " .. report_err end
  end
  return { restored = #restored, kept = answer.kept }
end

-- ----------------------------------------------------------------------- culling

-- The group an image was in when the request was written, still the same?
local function same_group(image, sent)
  return image.group_leader.id == sent.group and #image:get_group_members() == sent.group_size
end

local function report_entry(sent, extra)
  local entry = { path = sent.path, duplicate = sent.duplicate }
  for key, value in pairs(extra) do entry[key] = value end
  return entry
end

-- One group of aes-index's: the frames join the leader's group, the leader (the keeper)
-- leads it. Only if none of them changed group since the request (a person may have
-- grouped them meanwhile); every image whose group changed is reported for the journal.
local function apply_group(group, images, sent, grouped)
  for _, ref in ipairs(group.members) do
    if not same_group(images[ref], sent[ref]) then return false end
  end
  local leader = images[group.leader]
  for _, ref in ipairs(group.members) do
    if ref ~= group.leader then images[ref]:group_with(leader) end
  end
  leader:make_group_leader()
  for _, ref in ipairs(group.members) do
    local now = images[ref].group_leader.id
    if now ~= sent[ref].group then grouped[#grouped + 1] = report_entry(sent[ref], { old = sent[ref].group, new = now }) end
  end
  return true
end

local function attach(image, name)
  dt.tags.attach(dt.tags.create(name), image)
end

local function detach(image, name)
  local tag = dt.tags.find(name)
  if tag then dt.tags.detach(tag, image) end
end

-- Tags to attach / detach, each only if the image still has it / lacks it as the request
-- said; `tagged` gets {tag, old, new} (1: attached, 0: not) for each change made.
local function apply_tags(image, sent, item, tagged)
  for _, name in ipairs(item.attach or {}) do
    if not has_tag(image, name) then
      attach(image, name)
      tagged[#tagged + 1] = report_entry(sent, { tag = name, old = 0, new = 1 })
    end
  end
  for _, name in ipairs(item.detach or {}) do
    if has_tag(image, name) then
      detach(image, name)
      tagged[#tagged + 1] = report_entry(sent, { tag = name, old = 1, new = 0 })
    end
  end
end

local function apply_cull(answer, images, sent)
  local grouped, tagged, rated, changed = {}, {}, {}, 0
  for _, group in ipairs(answer.groups) do
    if not apply_group(group, images, sent, grouped) then changed = changed + 1 end
  end
  for _, item in ipairs(answer.images) do
    local image = images[item.ref]
    apply_tags(image, sent[item.ref], item, tagged)
    if item.rating and still_as_sent(image, sent[item.ref]) then
      rated[#rated + 1] = report_entry(sent[item.ref], { old = image.rating, new = item.rating })
      image.rating = item.rating
    elseif item.rating then
      changed = changed + 1
    end
  end
  if #grouped + #tagged + #rated > 0 then
    local reported, err = ask("applied", { run = answer.run, grouped = grouped, tagged = tagged, rated = rated })
    if not reported then return nil, "culled, but not journaled: " .. err end
  end
  return { groups = #answer.groups - changed, left_alone = #answer.left_alone, tagged = #tagged,
           rejected = #rated, changed = changed, errors = #answer.errors }
end

local function score_chunk(images)
  local answer, err = ask("score", { images = describe_all(images) })
  if not answer then return nil, err end
  return { scored = #answer.images, errors = #answer.errors }
end

-- Scoring is the long part (decoding new photos): in chunks, most of the bar. Then one
-- cull over all of them (groups span the chunks) and its answer applied.
local function cull(images)
  return as_job("cull", function(job)
    local scored, err = in_chunks(job, "score", images, score_chunk, 0.9)
    if not scored then return nil, err end
    if scored.cancelled_after then return { cancelled_after = scored.cancelled_after } end
    local sent = describe_all_for_cull(images)
    local answer, cull_err = ask("cull", { images = sent }, cull_arguments())
    if not answer then return nil, cull_err end
    for _, group in ipairs(answer.left_alone) do
      dt.print_log(NAME .. ": left alone (you grouped some of its frames): " .. group.reason)
    end
    return apply_cull(answer, images, sent)
  end)
end

local function uncull(images)
  local sent = describe_all_for_cull(images)
  local answer, err = ask("uncull", { images = sent })
  if not answer then return nil, err end
  local unculled = {}
  for _, item in ipairs(answer.images) do
    local image, was = images[item.ref], sent[item.ref]
    -- the leader only: the group shrinks as its members leave it one by one
    if item.ungroup and image.group_leader.id == was.group then
      image:group_with() -- alone again, as it was before the cull
      unculled[#unculled + 1] = report_entry(was, { field = "group" })
    end
    local undo_tags = { attach = item.attach, detach = item.detach }
    local changes = {}
    apply_tags(image, was, undo_tags, changes)
    for _, change in ipairs(changes) do unculled[#unculled + 1] = report_entry(was, { field = "tag", tag = change.tag }) end
    if item.rating and still_as_sent(image, was) then
      image.rating = item.rating
      unculled[#unculled + 1] = report_entry(was, { field = "rating" })
    end
  end
  if #unculled > 0 then
    local reported, report_err = ask("applied", { unculled = unculled })
    if not reported then return nil, "cull undone, but not journaled: " .. report_err end
  end
  return { undone = #unculled, kept = answer.kept }
end

-- ----------------------------------------------------------------------- one action at a time

-- One action at a time: an import batch waits while a button's action runs, and vice versa.
local busy = false

local function exclusively(label, action, ...)
  if busy then return nil, "busy" end
  busy = true
  local ok, result, err = pcall(action, ...)
  busy = false
  if not ok then result, err = nil, tostring(result) end
  if result then
    local parts = {}
    for key, value in pairs(result) do parts[#parts + 1] = value .. " " .. key:gsub("_", " ") end
    table.sort(parts)
    dt.print(NAME .. ": " .. label .. ": " .. table.concat(parts, ", "))
  else
    dt.print_error(NAME .. ": " .. label .. ": " .. err)
    dt.print(NAME .. ": " .. label .. " failed: " .. err)
  end
  return result, err
end

function M.rate(images) return exclusively("rate", rate, images) end
function M.select_top(images, percent) return exclusively("select top", select_top, images, percent) end
function M.remove_stars(images) return exclusively("remove stars", remove_stars, images) end
function M.cull(images) return exclusively("cull", cull, images) end
function M.uncull(images) return exclusively("undo cull", uncull, images) end

-- "review in browser": darktable's Lua API has no call that opens a URL, and
-- dt.control.execute waits for the program it runs. So aes-index starts its review of these
-- images' folders as a process of its own (it outlives this call, stops when idle), opens
-- the browser and answers with the address. Nothing is written into darktable: decisions
-- made there reach it through the sidecars (see the README).
function M.review(images)
  local answer, err = ask("review", { images = describe_all(images) })
  if answer then
    dt.print(NAME .. ": review " .. (answer.already_running and "already running at " or "open at ") .. answer.address)
  else
    dt.print_error(NAME .. ": review in browser: " .. err)
    dt.print(NAME .. ": review in browser failed: " .. err)
  end
  return answer, err
end

-- ----------------------------------------------------------------------- new imports, in batches

local pending = {} -- imported images not scored yet
local arrivals = 0 -- counts imports, so a waiting flush can tell whether more came
local flush_waiting = false
local import_batches = 0
local stopped = false -- the script manager stopped the script: imports are not ours to score

function M.flush_imports()
  if #pending == 0 then return { rated = 0 } end
  if busy then return nil, "busy" end
  local batch = pending
  pending = {}
  import_batches = import_batches + 1
  return exclusively("new imports", rate, batch)
end

-- Runs in the background: waits until no photo arrived for IMPORT_QUIET_MS (a single-file
-- import raises no "post-import-film"), then scores the batch in one aes-index call.
local function flush_when_quiet()
  repeat
    local seen = arrivals
    dt.control.sleep(IMPORT_QUIET_MS)
  until arrivals == seen and not busy
  flush_waiting = false
  M.flush_imports()
end

local function schedule_flush()
  if flush_waiting then return end
  flush_waiting = true
  dt.control.dispatch(flush_when_quiet)
end

local function on_import(_, image)
  if stopped or not dt.preferences.read(NAME, "score_imports", "bool") then return end
  pending[#pending + 1] = image
  arrivals = arrivals + 1
  schedule_flush()
end

-- A folder import ends with this event: no need to wait for the quiet time.
local function on_film_imported()
  dt.control.dispatch(function() if not busy then M.flush_imports() end end)
end

local function register_events()
  dt.register_event(NAME .. "_import", "post-import-image", on_import)
  dt.register_event(NAME .. "_film", "post-import-film", on_film_imported)
end

function M.status()
  return { pending = #pending, busy = busy, import_batches = import_batches, waiting = flush_waiting, stopped = stopped }
end

-- ----------------------------------------------------------------------- the lighttable module

local scope = dt.new_widget("combobox") {
  label = "act on", tooltip = "which images the buttons below work on",
  "selected images", "current collection", selected = 1,
}

local percent = dt.new_widget("slider") {
  label = "top", tooltip = "how much of the images to select, by aesthetic score (percent)",
  soft_min = 1, soft_max = 50, hard_min = 1, hard_max = 100, step = 1, digits = 0, value = 10,
}

local reject_flagged = dt.new_widget("check_button") {
  label = "reject technical failures",
  tooltip = "cull also gives blurry, over- or underexposed photos beside an unflagged keeper darktable's reject, " ..
            "unless you rated them (undo cull puts their rating back)",
  value = dt.preferences.read(NAME, "reject_flagged", "bool"),
  clicked_callback = function(self) dt.preferences.write(NAME, "reject_flagged", "bool", self.value) end,
}

local function scoped_images()
  local source = scope.selected == 1 and dt.gui.selection() or dt.collection
  local images = {}
  for i, image in ipairs(source) do images[i] = image end
  return images
end

local function button(label, tooltip, action)
  return dt.new_widget("button") {
    label = label, tooltip = tooltip,
    clicked_callback = function() action(scoped_images()) end,
  }
end

dt.register_lib(NAME, "aesthetic", true, false,
  { [dt.gui.views.lighttable] = { "DT_UI_CONTAINER_PANEL_RIGHT_CENTER", 100 } },
  dt.new_widget("box") {
    orientation = "vertical",
    scope,
    button("score and rate", "score with aes-index and set stars where you haven't set any", M.rate),
    percent,
    button("select top", "select the best of the images by aesthetic score",
      function(images) M.select_top(images, percent.value) end),
    button("remove our stars", "put back the ratings aes-index replaced, and remove its star and score tags", M.remove_stars),
    dt.new_widget("section_label") { label = "culling" },
    button("cull", "group bursts and near-duplicates with the keeper as group leader, and tag keepers and " ..
      "technical failures (aesthetic|keeper, aesthetic|blurry, ...); groups you made are left alone", M.cull),
    reject_flagged,
    button("undo cull", "ungroup what cull grouped, remove its tags, put back ratings it rejected " ..
      "(what you changed since stays)", M.uncull),
    button("review in browser", "look at these images' groups at 100 % and decide by keyboard in your browser " ..
      "(aes-index review over their folders)", M.review),
  })
register_events()

-- lua-scripts' script manager: stopping hides the module and lets go of the import events;
-- starting again brings both back (the preferences stay registered: darktable has no way
-- to remove them).
function script_data.destroy()
  stopped = true
  M.cancel()
  pending = {}
  dt.destroy_event(NAME .. "_import", "post-import-image")
  dt.destroy_event(NAME .. "_film", "post-import-film")
  dt.gui.libs[NAME].visible = false
end

function script_data.restart()
  if stopped then register_events() end
  stopped = false
  dt.gui.libs[NAME].visible = true
end

script_data.show = script_data.restart

return script_data
