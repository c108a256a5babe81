// What a TypeScript caller writes against the types openapi-typescript makes from
// openapi/openapi.yaml. .ci/describe generates them (next to a copy of this file, as
// ./openapi.ts) and compiles this with `tsc --strict --noEmit`: it must compile, and each
// `@ts-expect-error` below must still find its error (else tsc reports it unused).
import type { components, paths } from "./openapi";

type Schemas = components["schemas"];
type RequestBody = paths["/"]["post"]["requestBody"]["content"]["application/json"];
type ResponseBody = paths["/"]["post"]["responses"][200]["content"]["application/json"];

// The create of README.md: the defaulted fields (stage, budgetConfirmed, visibilityMode) left out.
const create: Schemas["CreateOpportunityRequest"] = {
    jsonrpc: "2.0",
    id: 1,
    method: "opportunity.create",
    params: {
        customerId: "550e8400-e29b-41d4-a716-446655440000",
        title: "Chiller retrofit, Building C",
        pipelineType: "retrofit",
        estimatedValue: 125000.5,
        expectedCloseDate: "2027-03-31T19:00:00+02:00",
    },
};

// Each method's request is a request body, alone or in a batch; list and changes need no params.
const single: RequestBody = create;
const batch: RequestBody = [
    create,
    { jsonrpc: "2.0", id: "a", method: "opportunity.get", params: { id: "01a21e45-7cbb-7a3c-9e41-6f2d8b0c5a17" } },
    { jsonrpc: "2.0", id: 2, method: "opportunity.list" },
    { jsonrpc: "2.0", id: 3, method: "opportunity.list", params: { stage: ["proposal"], orderBy: "estimatedValue", limit: 20 } },
    {
        jsonrpc: "2.0",
        id: 4,
        method: "opportunity.update",
        params: { id: "01a21e45-7cbb-7a3c-9e41-6f2d8b0c5a17", expectedVersion: 1, stage: "proposal", probability: 60 },
    },
    { jsonrpc: "2.0", id: 5, method: "opportunity.changes", params: { since: "00000000000000000012" } },
    { jsonrpc: "2.0", method: "opportunity.archive", params: [{ id: "01a21e45-7cbb-7a3c-9e41-6f2d8b0c5a17", expectedVersion: 2 }] },
    { jsonrpc: "2.0", id: 6, method: "rpc.discover" },
];

// The params are typed per method: what the service refuses does not compile.
const missingRequired: Schemas["CreateOpportunityRequest"] = {
    jsonrpc: "2.0",
    method: "opportunity.create",
    // @ts-expect-error pipelineType is required
    params: { customerId: "550e8400-e29b-41d4-a716-446655440000", title: "x" },
};
const unknownField: Schemas["CreateOpportunityParams"] = {
    customerId: "550e8400-e29b-41d4-a716-446655440000",
    title: "x",
    pipelineType: "retrofit",
    // @ts-expect-error unknown fields are refused
    pipeline_type: "retrofit",
};
const badEnum: Schemas["CreateOpportunityParams"] = {
    customerId: "550e8400-e29b-41d4-a716-446655440000",
    title: "x",
    // @ts-expect-error not a pipeline type
    pipelineType: "Retrofit",
};
const wrongParams: RequestBody = {
    jsonrpc: "2.0",
    id: 7,
    method: "opportunity.get",
    // @ts-expect-error the params of opportunity.get are not those of opportunity.create
    params: { customerId: "550e8400-e29b-41d4-a716-446655440000", title: "x", pipelineType: "retrofit" },
};

// Results are typed per method: the answer to a create is an opportunity.
function createdId(answer: Schemas["CreateOpportunityResponse"]): string {
    const opportunity: Schemas["Opportunity"] = answer.result;
    return opportunity.id;
}

// The body of any answer: narrowed to a success, its result is one of the methods' results.
function firstId(body: ResponseBody): string | undefined {
    const answers = Array.isArray(body) ? body : body === null ? [] : [body];
    for (const answer of answers) {
        if ("error" in answer) {
            const code: number = answer.error.code;
            void code;
            continue;
        }
        const result = answer.result;
        if (typeof result === "object" && result !== null && "stage" in result) {
            return result.id;
        }
    }
    return undefined;
}

function nextPage(answer: Schemas["ListOpportunitiesResponse"]): string | null {
    const ids: string[] = answer.result.items.map((o) => o.id);
    void ids;
    return answer.result.nextCursor;
}

export { single, batch, missingRequired, unknownField, badEnum, wrongParams, createdId, firstId, nextPage };
