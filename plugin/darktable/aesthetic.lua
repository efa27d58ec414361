--[[
aesthetic: aes-index's aesthetic scores and star ratings inside darktable 4.2+ (Lua API 9).

A lighttable module (right panel) whose buttons act on the selected images or the current
collection: "score and rate" (stars by aes-index's rating policy, plus the tags
aesthetic|stars|N and aesthetic|score|70-80%), "select top N%" and "remove our stars".
Newly imported photos are scored and rated too, in one batch per import.

Install with `aes-index darktable install` (copies this file to <config>/lua/aesthetic.lua
and adds `require "aesthetic"` to <config>/luarc), then restart darktable.

All the thinking happens in aes-index; this script only talks to it. For every action it
writes a JSON request into a temporary file, runs

    'aes-index' 'darktable' 'rate' '--request' '/tmp/lua_XXXXXX' '--response' '/tmp/lua_YYYYYY'

and applies the JSON answer. Photo paths travel only inside those files, never on a command
line, and the one program ever run is the configured aes-index, single-quoted for the shell.
The request carries each image's current rating, so aes-index can keep ratings a person set
("manual ratings win"), and the script reports back what it set, so it can be undone.

Preferences (settings > lua options): the aes-index command; "1 star counts as unrated"
(darktable gives every import 1 star: turn this on if you never use 1 star yourself, else
aes-index takes those stars for your own and leaves the photos alone); scoring new imports.
The rating policy itself is aes-index's (~/.config/aes-index/config.toml: policy, cuts).

The actions are plain functions of the table `require "aesthetic"` returns, for scripts and
tests: rate(images), select_top(images, percent), remove_stars(images), flush_imports(),
status(). Each action returns a summary table, or nil and an error message. (json and
sh_quote are exposed too, so the tests can check them.)
]]

local dt = require "darktable"

local M = {}
local NAME = "aesthetic"
local PROTOCOL_VERSION = 1
local TAG_PREFIX = "aesthetic|" -- every tag we attach lives below this
local IMPORT_QUIET_MS = 1500 -- an import batch is complete after this long without a new photo

if dt.configuration.api_version_major < 9 then
  error("aesthetic needs darktable 4.2 or later (Lua API 9)")
end

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

local function executable()
  local value = dt.preferences.read(NAME, "executable", "string")
  return (value ~= nil and value ~= "") and value or "aes-index"
end

local function rating_arguments()
  if dt.preferences.read(NAME, "treat_one_star_as_unrated", "bool") then
    return { "--treat-as-unrated", "1" }
  end
  return {}
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
-- or nil and aes-index's last line of output.
local function ask(action, request, arguments)
  local request_file, response_file, log_file = os.tmpname(), os.tmpname(), os.tmpname()
  request.version = PROTOCOL_VERSION
  write_file(request_file, json.encode(request))
  local words = { executable(), "darktable", action, "--request", request_file, "--response", response_file }
  for _, word in ipairs(arguments or {}) do words[#words + 1] = word end
  for i, word in ipairs(words) do words[i] = sh_quote(word) end
  local command = table.concat(words, " ") .. " >" .. sh_quote(log_file) .. " 2>&1"
  local status = dt.control.execute(command) -- a shell runs it; darktable stays responsive
  local response, log = read_file(response_file), read_file(log_file)
  os.remove(request_file)
  os.remove(response_file)
  os.remove(log_file)
  if status ~= 0 or response == "" then
    return nil, last_line(log) or string.format("%s failed (status %d)", executable(), status)
  end
  return json.decode(response)
end

local function describe(image, ref)
  return { ref = ref, path = image.path .. "/" .. image.filename, duplicate = image.duplicate_index,
           rating = image.rating }
end

local function describe_all(images)
  local list = {}
  for ref, image in ipairs(images) do list[ref] = describe(image, ref) end
  return list
end

-- Our tags on an image become exactly `names`; other tags are never touched.
local function set_our_tags(image, names)
  local missing = {}
  for _, name in ipairs(names) do missing[name] = true end
  for _, tag in ipairs(dt.tags.get_tags(image)) do
    if tag.name:sub(1, #TAG_PREFIX) == TAG_PREFIX then
      if missing[tag.name] then missing[tag.name] = nil else dt.tags.detach(tag, image) end
    end
  end
  for name in pairs(missing) do dt.tags.attach(dt.tags.create(name), image) end
end

-- ----------------------------------------------------------------------- actions

-- aes-index decided on the ratings the request carried; an image a person re-rated while
-- it decided keeps the person's rating (the same-read rule of every rating target).
local function still_as_sent(image, sent)
  return image.rating == sent.rating
end

local function rate(images)
  local sent = describe_all(images)
  local answer, err = ask("rate", { images = sent }, rating_arguments())
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
    for key, value in pairs(result) do parts[#parts + 1] = value .. " " .. key end
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

-- ----------------------------------------------------------------------- new imports, in batches

local pending = {} -- imported images not scored yet
local arrivals = 0 -- counts imports, so a waiting flush can tell whether more came
local flush_waiting = false
local import_batches = 0

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

dt.register_event(NAME .. "_import", "post-import-image", function(_, image)
  if not dt.preferences.read(NAME, "score_imports", "bool") then return end
  pending[#pending + 1] = image
  arrivals = arrivals + 1
  schedule_flush()
end)

-- A folder import ends with this event: no need to wait for the quiet time.
dt.register_event(NAME .. "_film", "post-import-film", function()
  dt.control.dispatch(function() if not busy then M.flush_imports() end end)
end)

function M.status()
  return { pending = #pending, busy = busy, import_batches = import_batches, waiting = flush_waiting }
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
    button("remove our stars", "put back the ratings aes-index replaced, and remove its tags", M.remove_stars),
  })

return M
